-- Insideout mode, on a miss, before the database is queried: read the stamps of the
-- query's conjunctions, creating missing ones, and record the schemes. The value is
-- then stored with the checksum of these stamps; an invalidation in between replaces
-- a stamp, so that value never validates.
-- On a Redis Cluster it runs once per table: that table's stamps, schemes set and epoch,
-- all tagged {<table>}, so in one slot.
--
-- KEYS: the conjunction stamp keys (in the order reads use), then one schemes set per table
-- ARGV: a fresh random stamp, stamp timeout (seconds), the number of conjunction keys,
--       then for each table: the number n of its conjunctions, then n schemes
-- Returns the stamps, in the order of the conjunction keys; false when a conjunction
-- key is a set of conj-set mode (a deploy switching modes runs both): it is left for
-- the writes that delete its cache keys with it, and the value is not to be stored.
local fresh, timeout, nconj = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- a stamp outlives the values stored with it, as conj sets do (see prepare.lua)
local conj_ttl = timeout + 10

local stamps, conj_set = {}, false
for i = 1, nconj do
    local conj = KEYS[i]
    local stamp = redis.pcall('get', conj)
    if type(stamp) == 'table' then  -- a set of conj-set mode
        conj_set = true
    elseif not stamp then
        stamp = fresh
        redis.call('set', conj, stamp, 'EX', conj_ttl)
    elseif redis.call('ttl', conj) <= timeout then
        redis.call('expire', conj, conj_ttl)
    end
    stamps[i] = stamp
end

local k, a = nconj + 1, 4
while a <= #ARGV do
    local n = tonumber(ARGV[a])
    a = a + 1
    for i = 1, n do
        redis.call('sadd', KEYS[k], ARGV[a])
        a = a + 1
    end
    k = k + 1
end
for e = k, #KEYS do
    redis.call('set', KEYS[e], fresh, 'NX')
end
if conj_set then
    return false
end
return stamps
