//! One payload of each shape ArcGIS sends, parsed into events: what `hookbridge check` renders
//! every sink's templates with, so a template that fails on a real shape fails at load.

use super::{HookKind, parse};
use crate::event::Event;

/// One payload of each shape ArcGIS sends.
pub const PAYLOADS: [(HookKind, &str); 7] = [
    (
        HookKind::Portal,
        r#"{"info": {"webhookName": "Item activity", "webhookId": "0d8d2d0a6c5a4a3f",
            "portalURL": "https://gis.example.org/portal/", "when": 1700000123456},
           "events": [{"username": "jsmith", "userId": "a1b2c3", "when": 1700000120001,
            "operation": "share", "source": "item", "id": "6cd80cb32d4a4b4d858a020e57fba7b1",
            "properties": {"sharedToGroups": ["Everyone"]}}]}"#,
    ),
    (
        HookKind::FeatureService,
        r#"[{"name": "parcels-edits", "layerId": 0, "orgId": "ABCD1EFghIJK2LmN",
            "serviceName": "Parcels", "lastUpdatedTime": 1629325549649,
            "changesUrl": "https://services.example.com/ABCD/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]",
            "events": ["FeaturesCreated"]}]"#,
    ),
    (
        HookKind::FeatureService,
        r#"{"layerId": 0, "serviceName": "Parcels", "changeType": "FeaturesUpdated",
            "orgId": "ABCD1EFghIJK2LmN",
            "changesUrl": "https://services.example.com/ABCD/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]"}"#,
    ),
    (
        HookKind::FeatureService,
        r#"{"serviceType": "FeatureServer", "name": "Mains edits",
            "id": "c4a7db24-0c5e-4a00-9103-0c7d2fdc03b4", "folderName": "Water", "serviceName": "Mains",
            "changesUrl": "https://gis.example.org/server/rest/services/Water/Mains/FeatureServer/extractChanges?serverGens=%5B1,2%5D",
            "events": [{"eventType": "FeaturesCreated", "when": 1730385704000}]}"#,
    ),
    (
        HookKind::Geoprocessing,
        r#"{"serviceType": "GPServer", "jobId": "j6e2c1b7f", "name": "buffer-jobs",
            "statusURL": "https://gis.example.org/server/rest/services/Tools/Buffer/GPServer/Buffer/jobs/j6e2c1b7f",
            "taskName": "Buffer", "folderName": "Tools", "serviceName": "Buffer",
            "events": [{"eventType": "esriJobSucceeded", "when": 1730385704000}]}"#,
    ),
    (
        HookKind::Geoprocessing,
        r#"{"webhookName": "buffer-jobs", "jobId": "j6e2c1b7f", "jobStatus": "esriJobSucceeded",
            "serviceName": "Buffer", "taskName": "BufferPoints"}"#,
    ),
    (
        HookKind::Survey123,
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
    ),
];

/// The first event of each sample payload, with the payload it came in; `accepted_at` is fixed
/// so that rendered times are stable.
pub fn events() -> Vec<(Event, String)> {
    PAYLOADS
        .iter()
        .filter_map(|(kind, json)| {
            let mut e = parse(*kind, "sample", json.as_bytes())
                .ok()?
                .into_iter()
                .next()?;
            e.accepted_at = 1_700_000_125_000;
            Some((e, json.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sample_parses() {
        assert_eq!(super::events().len(), super::PAYLOADS.len());
    }
}
