-- wrk script: POST real images as multipart bodies (rotating over several), count answers by status and
-- print one JSON line at the end. Arguments: DIR N [PATH]; the bodies are DIR/body_0.bin ... body_{N-1}.bin.
-- A body may come with DIR/body_I.meta, four lines: method, path, Content-Type, and a number of bytes of
-- filler header to add (the soak's v2 bodies and oversized headers); without one it goes to PATH.
-- The environment variable BENCH_TOKEN, if set, is sent as a bearer token.
local boundary = "catsDogsOtherBenchBoundary"
local threads = {}
local bodies = {}
local metas = {}
local counter = 0
local token = nil
local upload_path = "/upload"

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local dir, n = args[1], tonumber(args[2])
  upload_path = args[3] or "/upload"
  for i = 0, n - 1 do
    local f = assert(io.open(dir .. "/body_" .. i .. ".bin", "rb"))
    bodies[#bodies + 1] = f:read("*all")
    f:close()
    local m = io.open(dir .. "/body_" .. i .. ".meta", "r")
    if m then
      metas[#bodies] = {
        method = m:read("*line"), path = m:read("*line"), ctype = m:read("*line"), fill = tonumber(m:read("*line"))
      }
      m:close()
    end
  end
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  statuses = {}
end

function request()
  counter = counter + 1
  local i = (counter % #bodies) + 1
  local meta = metas[i]
  if meta then
    local headers = {["Content-Type"] = meta.ctype}
    if meta.fill > 0 then headers["X-Filler"] = string.rep("a", meta.fill) end
    if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
    return wrk.format(meta.method, meta.path, headers, bodies[i])
  end
  return wrk.format("POST", upload_path, nil, bodies[i])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[#counts + 1] = string.format('"%d":%d', status, count)
    end
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(counts, ",")))
end
