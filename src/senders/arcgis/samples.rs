//! One payload of each shape ArcGIS sends, per family: what `hookbridge check` renders every
//! sink's templates with, so a template that fails on a real shape fails at load.

use crate::senders::Sample;

/// Organization (portal) payloads.
pub(super) const PORTAL: &[Sample] = &[Sample::body(
    r#"{"info": {"webhookName": "Item activity", "webhookId": "0d8d2d0a6c5a4a3f",
            "portalURL": "https://gis.example.org/portal/", "when": 1700000123456},
           "events": [{"username": "jsmith", "userId": "a1b2c3", "when": 1700000120001,
            "operation": "share", "source": "item", "id": "6cd80cb32d4a4b4d858a020e57fba7b1",
            "properties": {"sharedToGroups": ["Everyone"]}}]}"#,
)];

/// Feature-service payloads, in each of the three shapes.
pub(super) const FEATURE_SERVICE: &[Sample] = &[
    Sample::body(
        r#"[{"name": "parcels-edits", "layerId": 0, "orgId": "ABCD1EFghIJK2LmN",
            "serviceName": "Parcels", "lastUpdatedTime": 1629325549649,
            "changesUrl": "https://services.example.com/ABCD/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]",
            "events": ["FeaturesCreated"]}]"#,
    ),
    Sample::body(
        r#"{"layerId": 0, "serviceName": "Parcels", "changeType": "FeaturesUpdated",
            "orgId": "ABCD1EFghIJK2LmN",
            "changesUrl": "https://services.example.com/ABCD/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]"}"#,
    ),
    Sample::body(
        r#"{"serviceType": "FeatureServer", "name": "Mains edits",
            "id": "c4a7db24-0c5e-4a00-9103-0c7d2fdc03b4", "folderName": "Water", "serviceName": "Mains",
            "changesUrl": "https://gis.example.org/server/rest/services/Water/Mains/FeatureServer/extractChanges?serverGens=%5B1,2%5D",
            "events": [{"eventType": "FeaturesCreated", "when": 1730385704000}]}"#,
    ),
];

/// Geoprocessing payloads, in both shapes.
pub(super) const GEOPROCESSING: &[Sample] = &[
    Sample::body(
        r#"{"serviceType": "GPServer", "jobId": "j6e2c1b7f", "name": "buffer-jobs",
            "statusURL": "https://gis.example.org/server/rest/services/Tools/Buffer/GPServer/Buffer/jobs/j6e2c1b7f",
            "taskName": "Buffer", "folderName": "Tools", "serviceName": "Buffer",
            "events": [{"eventType": "esriJobSucceeded", "when": 1730385704000}]}"#,
    ),
    Sample::body(
        r#"{"webhookName": "buffer-jobs", "jobId": "j6e2c1b7f", "jobStatus": "esriJobSucceeded",
            "serviceName": "Buffer", "taskName": "BufferPoints"}"#,
    ),
];

/// A Survey123 record.
pub(super) const SURVEY123: &[Sample] = &[Sample::body(
    r#"{"eventType": "addData",
            "feature": {"attributes": {"globalid": "{B3863DFC-3E46-4A7B-8366-7B7D0BA85C0D}", "objectid": 11,
                "what_industry_do_you_work_in": "Science"}, "geometry": {"x": 5.1, "y": 52.1,
                "spatialReference": {"wkid": 4326}},
              "layerInfo": {"id": 0, "name": "survey", "globalIdField": "globalid", "objectIdField": "objectid",
                "fields": [{"name": "objectid", "type": "esriFieldTypeOID", "alias": "ObjectID"},
                  {"name": "globalid", "type": "esriFieldTypeGlobalID", "alias": "GlobalID"},
                  {"name": "what_industry_do_you_work_in", "type": "esriFieldTypeString",
                   "alias": "What industry do you work in?"}]},
              "result": {"globalId": "{B3863DFC-3E46-4A7B-8366-7B7D0BA85C0D}", "objectId": 11}},
            "surveyInfo": {"formItemId": "9300861aa41049b9bf28897ba2f48796", "formTitle": "Welcome Survey",
              "serviceUrl": "https://services.example.com/ABCD/arcgis/rest/services/survey123_x/FeatureServer"},
            "userInfo": {"username": "jsmith", "fullName": "Jo Smith"},
            "portalInfo": {"url": "https://www.arcgis.com"}}"#,
)];
