-- wrk script for the predict-overhead and batching benchmarks.
-- Sends POST requests (empty body) and, when done, prints one parseable line:
--   BENCH_RESULT requests=N duration_us=N status_errors=N ... p50_us=N p99_us=N
wrk.method = "POST"
wrk.body = ""
wrk.headers["Accept"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d bytes=%d"
      .. " connect_errors=%d read_errors=%d write_errors=%d"
      .. " status_errors=%d timeout_errors=%d"
      .. " mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
