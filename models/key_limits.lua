-- A virtual key's fleet-wide limits: admit one interactive job, or settle one at its end.
-- The clock is Redis's own (TIME), so API processes on several machines share one window.
--
-- KEYS (models.redis_keys.key_limit_keys): rpm sorted set (member job id, score accept
--   ms), tpm key prefix (the minute is appended), active sorted set (member job id,
--   score = the job's deadline ms).
-- ARGV[1] = "admit": job id, rpm, tpm, max parallel jobs (each 0 = unlimited), estimated
--   tokens, active-until ms, rpm window ms, tpm window ms, tpm key ttl ms.
--   Returns {1, now_ms, jobs in the rpm window, oldest of them ms, tokens of the minute,
--   the minute's end ms} when admitted (and counted), else
--   {0, limit name, retry-after ms, limit, used} with nothing counted.
-- ARGV[1] = "settle": job id, token correction (actual - estimate), tpm window ms,
--   tpm key ttl ms. Frees the job's parallel slot and adds the correction to the
--   current minute, so that over the minutes every token is counted once.

local rpm_key, tpm_prefix, active_key = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job = ARGV[2]

if ARGV[1] == 'settle' then
  local delta = tonumber(ARGV[3])
  local tpm_window, tpm_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('ZREM', active_key, job)
  if delta ~= 0 then
    local tpm_key = tpm_prefix .. ':' .. math.floor(now / tpm_window)
    redis.call('INCRBY', tpm_key, delta)
    redis.call('PEXPIRE', tpm_key, tpm_ttl)
  end
  return 1
end

local rpm, tpm, parallel = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local est, active_until = tonumber(ARGV[6]), tonumber(ARGV[7])
local rpm_window, tpm_window, tpm_ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local minute = math.floor(now / tpm_window)
local tpm_key = tpm_prefix .. ':' .. minute

redis.call('ZREMRANGEBYSCORE', active_key, '-inf', now)
local running = redis.call('ZCARD', active_key)
if parallel > 0 and running >= parallel then
  return {0, 'max_parallel_jobs', 1000, parallel, running}
end

redis.call('ZREMRANGEBYSCORE', rpm_key, '-inf', now - rpm_window)
local requests = redis.call('ZCARD', rpm_key)
if rpm > 0 and requests >= rpm then
  local oldest = redis.call('ZRANGE', rpm_key, 0, 0, 'WITHSCORES')
  local wait = tonumber(oldest[2]) + rpm_window - now
  return {0, 'rpm', math.max(wait, 1), rpm, requests}
end

local used = tonumber(redis.call('GET', tpm_key) or '0')
-- A job that alone exceeds the limit is admitted into an empty minute.
if tpm > 0 and used > 0 and used + est > tpm then
  return {0, 'tpm', (minute + 1) * tpm_window - now, tpm, used}
end

redis.call('ZADD', rpm_key, now, job)
redis.call('PEXPIRE', rpm_key, rpm_window)
redis.call('INCRBY', tpm_key, est)
redis.call('PEXPIRE', tpm_key, tpm_ttl)
redis.call('ZADD', active_key, active_until, job)
if redis.call('PTTL', active_key) < active_until - now then
  redis.call('PEXPIRE', active_key, active_until - now)
end
local oldest = redis.call('ZRANGE', rpm_key, 0, 0, 'WITHSCORES')
return {1, now, requests + 1, tonumber(oldest[2]), used + est, (minute + 1) * tpm_window}
