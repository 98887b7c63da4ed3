-- wrk script of the benchmarks: sends POST requests and, when done, prints
-- one parseable line:
--   BENCH_RESULT requests=N duration_us=N status_errors=N ... p50_us=N p99_us=N
-- Usage: wrk ... -s post.lua URL [-- BODY_FILE [HEADERS_FILE]]
-- The body is empty unless BODY_FILE is given (sent as is); HEADERS_FILE
-- holds "Name: value" lines.
wrk.method = "POST"
wrk.body = ""
wrk.headers["Accept"] = "application/json"

local function slurp(path)
  local fh = assert(io.open(path, "rb"))
  local data = fh:read("*a")
  fh:close()
  return data
end

init = function(args)
  if args[1] then
    wrk.body = slurp(args[1])
  end
  if args[2] then
    for line in slurp(args[2]):gmatch("[^\r\n]+") do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      if name then
        wrk.headers[name] = value
      end
    end
  end
end

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
