-- Shared by the wrk scripts: counts every answer that is not a 201 (wrk's own counter
-- only sees non-2xx, and a 207 from /events/batch is not an acked batch), and prints one
-- line "BENCH_JSON {...}" that bench/intake.py reads instead of parsing wrk's text.
-- A script whose acked answer is another status (the tracking API's 200) sets OK_STATUS
-- before loading this file; "non_201" then counts answers other than that one.
local threads = {}
local ok_status = OK_STATUS or 201

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non_201 = 0
end

function response(status, headers, body)
  if status ~= ok_status then
    non_201 = non_201 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non_201")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non_201":%d,"socket_errors":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, bad, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
