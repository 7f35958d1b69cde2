-- wrk script: POST a fixed body (BENCH_BODY) per request; prints exact results as JSON.
-- Env: BENCH_AUTH (bearer token), BENCH_PROFILE (X-Profile), BENCH_BODY (the JSON body).

local auth = os.getenv("BENCH_AUTH")
local profile = os.getenv("BENCH_PROFILE")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end
if profile and profile ~= "" then
  wrk.headers["X-Profile"] = profile
end
wrk.body = os.getenv("BENCH_BODY")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
      .. '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
