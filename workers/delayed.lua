-- Pop the jobs whose wait for capacity is over: members scored <= now, at most `limit`.
-- KEYS[1]: the delayed-jobs sorted set. ARGV: now_ms, limit.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
