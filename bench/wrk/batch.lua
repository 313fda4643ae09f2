-- wrk script: POST /events/batch with BATCH_SIZE events per request (default 500).
local size = tonumber(os.getenv("BATCH_SIZE") or "500")
local counter = 0
request = function()
  local items = {}
  for i = 1, size do
    counter = counter + 1
    items[i] = string.format(
      '{"userId":"user-%d","eventType":"PRODUCT_VIEW","payload":{"productId":"sku-%d","price":19.99,"currency":"EUR"}}',
      counter % 1000, counter)
  end
  local body = '{"events":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/events/batch", {["Content-Type"] = "application/json"}, body)
end
