-- The response cache of one normalized request: its value, and a single-flight lock so
-- that identical jobs running at once make one provider call between them.
--
-- KEYS (models.redis_keys.cache_keys): value, lock.
-- ARGV[1] = "claim", token, lock ms: {1, value} on a hit; {2} when the caller now holds
--   the lock (it calls the provider); {3, lock pttl ms} while another job holds it.
-- ARGV[1] = "store", token, value, ttl ms: keep the value; release the lock if held.
-- ARGV[1] = "release", token: release the lock if the caller holds it.

local value_key, lock_key = KEYS[1], KEYS[2]
local op, token = ARGV[1], ARGV[2]

local function release()
  if redis.call('GET', lock_key) == token then
    redis.call('DEL', lock_key)
  end
end

if op == 'claim' then
  local value = redis.call('GET', value_key)
  if value then
    return {1, value}
  end
  local holder = redis.call('GET', lock_key)
  if holder == false or holder == token then
    redis.call('SET', lock_key, token, 'PX', tonumber(ARGV[3]))
    return {2}
  end
  return {3, redis.call('PTTL', lock_key)}
elseif op == 'store' then
  redis.call('SET', value_key, ARGV[3], 'PX', tonumber(ARGV[4]))
  release()
  return 1
elseif op == 'release' then
  release()
  return 1
end
return redis.error_reply('unknown op ' .. tostring(op))
