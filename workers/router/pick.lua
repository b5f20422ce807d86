-- Pick a deployment for one call, and admit the call, atomically for the whole fleet.
--
-- KEYS: 7 per candidate, in models.redis_keys.DEPLOYMENT_KEY_NAMES order
--   (cooldown, inflight, rpm, tpm prefix, latency, aimd, fails).
-- ARGV: now_ms, strategy, rand in [0,1), estimated tokens, lease_ms, lease token,
--   latency buffer, candidate count, rpm window ms, tpm window ms, then 5 per candidate:
--   rpm, tpm, max_parallel (0 = unlimited), weight, cost (-1 = unknown).
-- Returns {1, index} for the admitted candidate (1-based), or {0, wait_ms, reason...}
-- when none can take the call now (wait_ms: when the earliest one may).

local now = tonumber(ARGV[1])
local strategy = ARGV[2]
local rand = tonumber(ARGV[3])
local est = tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local token = ARGV[6]
local buffer = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local rpm_window = tonumber(ARGV[9])
local tpm_window = tonumber(ARGV[10])
local minute = math.floor(now / tpm_window)
local SATURATED_RETRY_MS = 250

local eligible = {}
local reasons = {}
local wait = nil

local function note_wait(ms, reason)
  reasons[#reasons + 1] = reason
  if wait == nil or ms < wait then wait = ms end
end

for i = 1, n do
  local k = (i - 1) * 7
  local a = 10 + (i - 1) * 5
  local rpm = tonumber(ARGV[a + 1])
  local tpm = tonumber(ARGV[a + 2])
  local max_parallel = tonumber(ARGV[a + 3])
  local weight = tonumber(ARGV[a + 4])
  local cost = tonumber(ARGV[a + 5])
  local tpm_key = KEYS[k + 4] .. ':' .. minute

  local cooldown = redis.call('PTTL', KEYS[k + 1])
  if cooldown > 0 then
    note_wait(cooldown, 'cooldown')
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', now)
    local inflight = redis.call('ZCARD', KEYS[k + 2])
    local limit = max_parallel
    local adaptive = tonumber(redis.call('HGET', KEYS[k + 6], 'limit') or '0')
    if adaptive > 0 then
      adaptive = math.max(1, math.floor(adaptive))
      if limit == 0 or adaptive < limit then limit = adaptive end
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now - rpm_window)
    local calls = redis.call('ZCARD', KEYS[k + 3])
    local used = tonumber(redis.call('GET', tpm_key) or '0')
    if limit > 0 and inflight >= limit then
      note_wait(SATURATED_RETRY_MS, 'max_parallel')
    elseif rpm > 0 and calls >= rpm then
      local oldest = redis.call('ZRANGE', KEYS[k + 3], 0, 0, 'WITHSCORES')
      note_wait(tonumber(oldest[2]) + rpm_window - now + 1, 'rpm')
    elseif tpm > 0 and used > 0 and used + est > tpm then
      note_wait((minute + 1) * tpm_window - now + 1, 'tpm')
    else
      local samples = redis.call('LRANGE', KEYS[k + 5], 0, -1)
      local latency = 0
      for _, v in ipairs(samples) do latency = latency + tonumber(v) end
      if #samples > 0 then latency = latency / #samples end
      eligible[#eligible + 1] = {
        index = i, inflight = inflight, latency = latency, samples = #samples, used = used,
        weight = weight, cost = cost, k = k,
      }
    end
  end
end

if #eligible == 0 then
  local out = {0, wait}
  for _, r in ipairs(reasons) do out[#out + 1] = r end
  return out
end

-- Lowest `score` wins; ties (and everything within `slack` of the best) are broken by
-- `rand`, so equal deployments share traffic instead of the first taking it all.
local function lowest(score, slack, among)
  among = among or eligible
  local best = nil
  for _, e in ipairs(among) do
    local s = score(e)
    if best == nil or s < best then best = s end
  end
  local pool = {}
  for _, e in ipairs(among) do
    if score(e) <= best + slack(best) then pool[#pool + 1] = e end
  end
  return pool[math.floor(rand * #pool) + 1]
end

-- Latency-based: a deployment with no latency yet (new, or back after its samples
-- expired) would score 0 and take every call until its first one returns. It is
-- probed instead, PROBES calls at a time, while the rest go by measured latency;
-- with nothing measured yet, calls spread by in-flight count.
local PROBES = 1
local function by_latency()
  local measured, probe = {}, nil
  for _, e in ipairs(eligible) do
    if e.samples > 0 then
      measured[#measured + 1] = e
    elseif e.inflight < PROBES and (probe == nil or e.inflight < probe.inflight) then
      probe = e
    end
  end
  if #measured == 0 then
    return lowest(function(e) return e.inflight end, function() return 0 end)
  end
  if probe ~= nil then return probe end
  return lowest(function(e) return e.latency end, function(b) return b * buffer end, measured)
end

local function none() return 0 end
local chosen
if strategy == 'least-busy' then
  chosen = lowest(function(e) return e.inflight end, none)
elseif strategy == 'latency-based-routing' then
  chosen = by_latency()
elseif strategy == 'cost-based-routing' then
  chosen = lowest(function(e) if e.cost < 0 then return math.huge end return e.cost end, none)
elseif strategy == 'usage-based-routing' or strategy == 'usage-based-routing-v2' then
  chosen = lowest(function(e) return e.used end, none)
else -- simple-shuffle
  local total = 0
  for _, e in ipairs(eligible) do total = total + e.weight end
  local r = rand * total
  chosen = eligible[#eligible]
  for _, e in ipairs(eligible) do
    r = r - e.weight
    if r < 0 then chosen = e break end
  end
end

local k = chosen.k
redis.call('ZADD', KEYS[k + 2], now + lease_ms, token)
redis.call('PEXPIRE', KEYS[k + 2], lease_ms + 60000)
redis.call('ZADD', KEYS[k + 3], now, token)
redis.call('PEXPIRE', KEYS[k + 3], rpm_window * 2)
return {1, chosen.index}
