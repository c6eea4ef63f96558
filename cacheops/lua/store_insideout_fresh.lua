-- Insideout mode, after the database was queried, when some of the query's stamps were
-- missing at the read: store the value only if no invalidation of its tables happened
-- since (each table's epoch is as read); the value is prefixed with the checksum of the
-- stamps. An invalidation in between, which had no stamp to delete, replaced an epoch,
-- and the value is dropped; a stamp that was there at the read and is gone or changed
-- drops it too. The missing stamps are made and the schemes recorded either way: the
-- next miss then reads them before its query, and is not dropped for a write to another
-- row of a busy table. A conjunction key that is a set of conj-set mode (a deploy
-- switching modes runs both) is left for the writes that delete its cache keys with
-- it, and the value is dropped.
-- One Redis only: it checks epochs and stores the value at once, which a cluster can't
-- do across slots. There a miss with stamps missing makes them before its query
-- (prepare_insideout.lua, table by table) and stores with store_insideout.lua.
--
-- KEYS: cache key, lock key, signal list key, then n conjunction stamp keys, then
--       for each table: its epoch key, its schemes set
-- ARGV: serialized value, timeout (seconds), '1' to release the dog-pile lock and wake
--       its waiters, how long the wake-up signal lasts (seconds), a fresh random stamp,
--       n, then the n stamps as read ('' when missing), then for each table: its
--       epoch as read, the number m of its conjunctions, then m schemes
-- Returns 1 when stored, 0 when dropped.
local timeout, fresh, n = tonumber(ARGV[2]), ARGV[5], tonumber(ARGV[6])
-- stamps outlive the values stored with them (the margin is prepare.lua's)
local conj_ttl = timeout + 10

local function stored(result)
    if ARGV[3] == '1' then
        redis.call('del', KEYS[2])
        redis.call('rpush', KEYS[3], '1')
        redis.call('expire', KEYS[3], ARGV[4])
    end
    return result
end

local ok = true
local k, a = 4 + n, 7 + n
while a <= #ARGV do
    if redis.call('get', KEYS[k]) ~= ARGV[a] then
        ok = false
    end
    k, a = k + 2, a + 2 + tonumber(ARGV[a + 1])
end

local stamps = {}
for i = 1, n do
    local conj, read = KEYS[3 + i], ARGV[6 + i]
    local stamp = redis.pcall('get', conj)
    if type(stamp) == 'table' then  -- a set of conj-set mode: left alone
        ok = false
        stamp = ''
    else
        if read ~= '' and stamp ~= read then
            ok = false
        end
        if not stamp then
            stamp = fresh
            redis.call('set', conj, stamp, 'EX', conj_ttl)
        elseif redis.call('ttl', conj) <= timeout then
            redis.call('expire', conj, conj_ttl)
        end
    end
    stamps[i] = stamp
end

k, a = 4 + n, 7 + n
while a <= #ARGV do
    local schemes_key, m = KEYS[k + 1], tonumber(ARGV[a + 1])
    for i = 1, m do
        redis.call('sadd', schemes_key, ARGV[a + 1 + i])
    end
    k, a = k + 2, a + 2 + m
end

if not ok then
    return stored(0)
end
redis.call('set', KEYS[1], redis.sha1hex(table.concat(stamps, ' ')) .. ARGV[1], 'EX', timeout)
return stored(1)
