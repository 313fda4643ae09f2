-- wrk script: POST /events/generate with a different userId per request (1,000 users),
-- so records spread over every partition as real traffic would.
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"userId":"user-%d","eventType":"PRODUCT_VIEW","payload":{"productId":"sku-%d","price":19.99,"currency":"EUR"}}',
    counter % 1000, counter)
  return wrk.format("POST", "/events/generate", {["Content-Type"] = "application/json"}, body)
end
