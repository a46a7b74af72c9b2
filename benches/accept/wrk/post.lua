-- wrk script: unique ArcGIS deliveries, so that every request is a durable write.
-- Arguments: <shape> [first], where shape is "portal1", "portal3" or "form" and first (0 by
-- default) is where the request counter starts, so that runs against one store stay unique.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local shape, counter = "portal1", 0
function init(args)
  shape = args[1] or "portal1"
  counter = tonumber(args[2] or "0") or 0
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function portal(n, events, pad)
  local list = {}
  for i = 1, events do
    list[i] = string.format(
      '{"username":"bench","userId":"173dd04b69134bdf99c5000aad0b6298","when":%d,"operation":"update","source":"item","id":"item-%s-%d-%d-%d","properties":{"padding":"%s"}}',
      n, shape, tid, n, i, pad)
  end
  return '{"info":{"webhookName":"bench","webhookId":"72fed926aeb74c9ca8a22aacddc6725a","portalURL":"https://gis.example.org/portal/","when":1700000000000},"events":['
    .. table.concat(list, ",") .. "]}"
end

local function form(n)
  local from = (tid + 1) * 1000000000000 + 2 * n
  local url = function(att)
    return string.format("https://services.example.com/ABCD1EFghIJK2LmN/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[%d,%d]&async=true&returnAttachments=%s", from, from + 1, att)
  end
  local when = 1755719255181 + n
  local json = string.format(
    '[{"name":"parcels-edits","layerId":0,"orgId":"ABCD1EFghIJK2LmN","serviceName":"Parcels","lastUpdatedTime":%d,"changesUrl":"%s","events":["FeaturesCreated","FeaturesUpdated","FeaturesDeleted"]},{"name":"parcels-edits","layerId":2,"orgId":"ABCD1EFghIJK2LmN","serviceName":"Parcels","lastUpdatedTime":%d,"changesUrl":"%s","events":["AttachmentsCreated"]}]',
    when, url("false"), when, url("true"))
  return "payload=" .. urlencode(json)
end

local pad1, pad3 = string.rep("x", 700), string.rep("x", 130)
function request()
  counter = counter + 1
  if shape == "form" then
    return wrk.format("POST", "/hooks/features", {["Content-Type"] = "application/x-www-form-urlencoded"}, form(counter))
  end
  local body = shape == "portal3" and portal(counter, 3, pad3) or portal(counter, 1, pad1)
  return wrk.format("POST", "/hooks/portal", {["Content-Type"] = "application/json"}, body)
end
