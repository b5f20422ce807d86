-- Report how an admitted call ended: release its in-flight lease and update the
-- deployment's shared health in one step.
--
-- KEYS: the deployment's 7 keys (see pick.lua).
-- ARGV: now_ms, lease token, mode, latency per output token (success), tokens used,
--   cooldown_ms, allowed_fails, decrease (1 = the provider pushed back: shrink the
--   adaptive limit), max_parallel (0 = none), latency window size,
--   latency ttl ms, aimd ttl ms, fails window ms, tpm key ttl ms, tpm window ms.
-- mode: 'ok' | 'cool' (cool down now for cooldown_ms) |
--   'count' (count a failure; cool down once more than allowed_fails in the window) |
--   'release' (a request error: only release).
-- Returns 1 when the deployment was put into cooldown.

local now = tonumber(ARGV[1])
local token = ARGV[2]
local mode = ARGV[3]
local max_parallel = tonumber(ARGV[9])
local aimd_ttl = tonumber(ARGV[12])
local DECREASE_FACTOR = 0.7
local DECREASE_GAP_MS = 1000

local inflight_before = redis.call('ZCOUNT', KEYS[2], now, '+inf')
redis.call('ZREM', KEYS[2], token)

local tokens = tonumber(ARGV[5])
if tokens > 0 then
  local tpm_key = KEYS[4] .. ':' .. math.floor(now / tonumber(ARGV[15]))
  redis.call('INCRBY', tpm_key, tokens)
  redis.call('PEXPIRE', tpm_key, tonumber(ARGV[14]))
end

if mode == 'ok' then
  redis.call('LPUSH', KEYS[5], ARGV[4])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[10]) - 1)
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[11]))
  -- Additive increase: +1 per `limit` successes, i.e. about one per round of calls,
  -- and only while the limit binds: an idle deployment proves nothing about capacity.
  local limit = tonumber(redis.call('HGET', KEYS[6], 'limit') or '0')
  if limit > 0 and inflight_before >= math.floor(limit) - 1 then
    limit = limit + 1 / limit
    if max_parallel > 0 and limit > max_parallel then limit = max_parallel end
    redis.call('HSET', KEYS[6], 'limit', tostring(limit))
    redis.call('PEXPIRE', KEYS[6], aimd_ttl)
  end
  return 0
end

if ARGV[8] == '1' then
  -- Multiplicative decrease, once per gap: one burst of 429s is one signal.
  local last = tonumber(redis.call('HGET', KEYS[6], 'last_decrease') or '0')
  if now - last >= DECREASE_GAP_MS then
    local limit = tonumber(redis.call('HGET', KEYS[6], 'limit') or '0')
    local base = inflight_before
    if limit > 0 and limit < base then base = limit end
    local new = math.max(1, math.floor(base * DECREASE_FACTOR))
    redis.call('HSET', KEYS[6], 'limit', tostring(new), 'last_decrease', tostring(now))
    redis.call('PEXPIRE', KEYS[6], aimd_ttl)
  end
end

local cool_ms = 0
if mode == 'cool' then
  cool_ms = tonumber(ARGV[6])
elseif mode == 'count' then
  local fails = redis.call('INCR', KEYS[7])
  if fails == 1 then redis.call('PEXPIRE', KEYS[7], tonumber(ARGV[13])) end
  if fails > tonumber(ARGV[7]) then
    cool_ms = tonumber(ARGV[6])
    redis.call('DEL', KEYS[7])
  end
end
if cool_ms > 0 then
  if redis.call('PTTL', KEYS[1]) < cool_ms then
    redis.call('SET', KEYS[1], mode, 'PX', math.floor(cool_ms))
  end
  return 1
end
return 0
