-- The fair waiting room of model groups (models/fair_room.py): jobs that found a
-- group out of capacity wait here, one queue per tenant, and are let through in fair
-- order: strictly by tier, then the tenant with the least recent usage per weight.
--
-- KEYS[1] rooms: ZSET group -> when a job of the group was last let through (ms)
-- ARGV[1] op: admit | wait | divert | release | tick
-- ARGV[2] prefix of the rooms' keys ("<fleet>:fair"); ARGV[3] now (ms)
-- ARGV[4] usage half-life (ms); then the op's own arguments (below).
--
-- Per group g, under "<prefix>:<g>": ":tenants" HASH tenant -> "rank|weight|tier"
-- (tenants with a job waiting), ":q:<tenant>" ZSET "job|priority|cost" -> (9 -
-- priority) * 1e13 + ms it entered, ":usage" HASH tenant -> "tokens|ms" (decaying),
-- ":due" ZSET job -> ms when the capacity it waits for is due back (limits and
-- cooldowns; none for a parallel-calls limit, which a call's end frees).
-- "<prefix>:ticket:<job>" marks a job let through, holding its entry's score.
--
-- Rooms whose group starts with "@" are the fleet's workers' (models/fair_room.py
-- FLEET_GROUP): jobs waiting for a free worker, each with a turn message in the
-- broker; a worker that takes a turn runs the job let through then. No ticket: a job
-- let through a fleet room still goes through its model group's room. "<prefix>:@busy"
-- is set while a worker's lane is full (the fleet is saturated).

local op = ARGV[1]
local prefix = ARGV[2]
local now = tonumber(ARGV[3])
local half = tonumber(ARGV[4])
local rooms = KEYS[1]
local SPAN = 1e13
local TICKET_TTL_S = 600

local function keys_of(group)
  local base = prefix .. ':' .. group
  return base, base .. ':tenants', base .. ':usage', base .. ':due'
end

local function decayed(usage, tenant)
  local v = redis.call('HGET', usage, tenant)
  if not v then return 0 end
  local sep = string.find(v, '|', 1, true)
  local used, at = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  if now > at then used = used * math.pow(0.5, (now - at) / half) end
  return used
end

local function charge(usage, tenant, cost)
  local used = math.max(0, decayed(usage, tenant) + cost)
  redis.call('HSET', usage, tenant, string.format('%.17g', used) .. '|' .. now)
  redis.call('PEXPIRE', usage, math.floor(half * 20))
end

local function parse_tenant(v)
  local rank, weight = string.match(v, '^([^|]+)|([^|]+)|')
  return tonumber(rank), tonumber(weight)
end

-- The tenant whose job goes next: the lowest rank (highest tier), then the least
-- usage per weight, then the one whose head waited longest.
local function best(base, tenants, usage)
  local flat = redis.call('HGETALL', tenants)
  local who, b_rank, b_share, b_head = nil, 0, 0, 0
  for i = 1, #flat, 2 do
    local tenant = flat[i]
    local rank, weight = parse_tenant(flat[i + 1])
    local head = redis.call('ZRANGE', base .. ':q:' .. tenant, 0, 0, 'WITHSCORES')
    if #head == 0 then
      redis.call('HDEL', tenants, tenant)
    else
      local share = decayed(usage, tenant) / weight
      local entered = tonumber(head[2]) % SPAN
      if who == nil or rank < b_rank or (rank == b_rank and (share < b_share
          or (share == b_share and entered < b_head))) then
        who, b_rank, b_share, b_head = tenant, rank, share, entered
      end
    end
  end
  return who, b_rank, b_share
end

local function cost_of(member)
  return tonumber(string.match(member, '|([^|]*)$')) or 0
end

local function job_of(member)
  return string.match(member, '^([^|]+)')
end

-- Let up to n jobs of the group through, in fair order; returns member, score pairs.
local function release(group, n)
  local base, tenants, usage, due = keys_of(group)
  local out = {}
  for _ = 1, n do
    local who = best(base, tenants, usage)
    if who == nil then break end
    local q = base .. ':q:' .. who
    local popped = redis.call('ZPOPMIN', q)
    if redis.call('ZCARD', q) == 0 then redis.call('HDEL', tenants, who) end
    local member, score = popped[1], popped[2]
    local job = job_of(member)
    redis.call('ZREM', due, job)
    charge(usage, who, cost_of(member))
    if string.sub(group, 1, 1) ~= '@' then
      redis.call('SET', prefix .. ':ticket:' .. job, score, 'EX', TICKET_TTL_S)
    end
    out[#out + 1] = member
    out[#out + 1] = score
  end
  if redis.call('HLEN', tenants) == 0 then
    redis.call('ZREM', rooms, group)
    redis.call('DEL', due)
  else
    redis.call('ZADD', rooms, 'XX', now, group)
  end
  return out
end

if op == 'admit' then
  -- ARGV[5] group, [6] tenant, [7] rank, [8] weight, [9] cost, [10] job.
  -- Returns {1 go | 0 wait, tenants waiting, the entry's score when let through,
  -- 1 when told to wait the job is its tenant's first in the room}.
  local group, tenant = ARGV[5], ARGV[6]
  local rank, weight, cost = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local base, tenants, usage = keys_of(group)
  local ticket = prefix .. ':ticket:' .. ARGV[10]
  local score = redis.call('GET', ticket)
  if score then
    redis.call('DEL', ticket)
    return {1, redis.call('HLEN', tenants), score, 0}
  end
  local waiting = redis.call('HLEN', tenants)
  if waiting == 0 then return {1, 0, false, 0} end
  if redis.call('HEXISTS', tenants, tenant) == 1 then return {0, waiting, false, 0} end
  local who, b_rank, b_share = best(base, tenants, usage)
  local share = decayed(usage, tenant) / weight
  if who == nil or rank < b_rank or (rank == b_rank and share <= b_share) then
    charge(usage, tenant, cost)
    return {1, waiting, false, 0}
  end
  return {0, waiting, false, 1}
elseif op == 'wait' then
  -- ARGV[5] group, [6] tenant, [7] "rank|weight|tier", [8] member, [9] score,
  -- [10] due ms (0: none), [11] usage to give back (a job let through that did not
  -- get its call). Returns the tenants waiting.
  local group, tenant, member = ARGV[5], ARGV[6], ARGV[8]
  local base, tenants, usage, due = keys_of(group)
  redis.call('ZADD', base .. ':q:' .. tenant, 'NX', tonumber(ARGV[9]), member)
  redis.call('HSET', tenants, tenant, ARGV[7])
  local due_ms = tonumber(ARGV[10])
  if due_ms > 0 then redis.call('ZADD', due, due_ms, job_of(member)) end
  redis.call('ZADD', rooms, 'NX', now, group)
  local refund = tonumber(ARGV[11])
  if refund > 0 then charge(usage, tenant, -refund) end
  return redis.call('HLEN', tenants)
elseif op == 'divert' then
  -- ARGV[5] group, [6] tenant, [7] "rank|weight|tier", [8] member, [9] score, [10] the
  -- fleet room of the job's queue ('' for none). A new job of a tenant that has jobs
  -- waiting in the group's room waits behind them, without a trip through the broker
  -- and a worker: returns 1. Else, while the fleet is saturated or others wait for a
  -- free worker, it waits in the fleet room: returns 2 (its turn is to be published).
  -- Else 0.
  local group, tenant, fleet = ARGV[5], ARGV[6], ARGV[10]
  local base, tenants = keys_of(group)
  local score, member = tonumber(ARGV[9]), ARGV[8]
  if redis.call('HEXISTS', tenants, tenant) == 1 then
    redis.call('ZADD', base .. ':q:' .. tenant, 'NX', score, member)
    redis.call('HSET', tenants, tenant, ARGV[7])
    return 1
  end
  if fleet == '' then return 0 end
  local f_base, f_tenants = keys_of(fleet)
  if redis.call('HLEN', f_tenants) == 0 and redis.call('EXISTS', prefix .. ':@busy') == 0 then
    return 0
  end
  redis.call('ZADD', f_base .. ':q:' .. tenant, 'NX', score, member)
  redis.call('HSET', f_tenants, tenant, ARGV[7])
  redis.call('ZADD', rooms, 'NX', now, fleet)
  return 2
elseif op == 'release' then
  -- ARGV[5] group, [6] how many.
  return release(ARGV[5], tonumber(ARGV[6]))
elseif op == 'tick' then
  -- ARGV[5] idle ms, [6] most let through per group. Lets through the jobs whose
  -- capacity is due back (as many, in fair order), or one from a room where none
  -- was let through for the idle time. Returns group, member, score triples.
  local idle, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
  local out = {}
  local listed = redis.call('ZRANGE', rooms, 0, -1, 'WITHSCORES')
  for i = 1, #listed, 2 do
    local group, last = listed[i], tonumber(listed[i + 1])
    local _, _, _, due = keys_of(group)
    local n = redis.call('ZCOUNT', due, '-inf', now)
    if n == 0 and now - last >= idle then n = 1 end
    if n > 0 then
      local got = release(group, math.min(n, cap))
      for j = 1, #got, 2 do
        out[#out + 1] = group
        out[#out + 1] = got[j]
        out[#out + 1] = got[j + 1]
      end
    end
  end
  return out
end
return redis.error_reply('unknown op ' .. tostring(op))
