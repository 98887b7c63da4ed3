-- wrk script of the fault benchmarks (fault_isolation.py, worker_recycling.py).
--
--   wrk -t1 -c32 -d20s -s faults.lua 'URL?query' -- EVERY SUFFIX
--
-- Sends POST requests (empty body) to URL?query; every EVERY-th request
-- (counted per wrk thread; use -t1 for an exact rate) gets SUFFIX appended
-- to its path, e.g. "&crash=true". EVERY 0 or absent: never.
-- When done, prints two parseable lines:
--   BENCH_RESULT requests=N duration_us=N ... (the format of post.lua)
--   FAULTS_RESULT special=N status_200=N status_503=N ... died_503=N
-- where special counts the requests sent with SUFFIX, status_XXX the
-- responses by status code, and died_503 the 503 answers saying that a
-- worker "was killed by" a signal.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  every = tonumber(args[1] or "0") or 0
  suffix = args[2] or ""
  counter = 0
  special = 0
  died = 0
  statuses = {}
end

function request()
  counter = counter + 1
  local path = wrk.path
  if every > 0 and counter % every == 0 then
    path = path .. suffix
    special = special + 1
  end
  return wrk.format("POST", path, { ["Accept"] = "application/json" }, "")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 503 and body and string.find(body, "was killed by", 1, true) then
    died = died + 1
  end
end

function done(summary, latency, requests)
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
  local total_special, total_died, counts = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_special = total_special + (thread:get("special") or 0)
    total_died = total_died + (thread:get("died") or 0)
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = { string.format("special=%d died_503=%d", total_special, total_died) }
  for status, n in pairs(counts) do
    table.insert(parts, string.format("status_%d=%d", status, n))
  end
  io.write("FAULTS_RESULT " .. table.concat(parts, " ") .. "\n")
end
