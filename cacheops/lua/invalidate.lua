-- Invalidate tables by rows: delete the conjunction key each row falls into under each
-- scheme in use on a table. The client derives those keys from the schemes it knows a
-- table to have (keys.known_schemes), so that every key touched here is in KEYS; this
-- script checks that no scheme in use is missing from them, and where one is does
-- nothing but return the schemes in use, for the client to derive the keys again.
-- A scheme registered after that check belongs to a read whose registration comes
-- after this invalidation, and whose query so runs after the write (docs/design.md,
-- "Declared keys").
-- In conj-set mode the cache keys the deleted sets referenced are deleted too, up to a
-- bound, so one write costs one round trip; popping a set's members and deleting it
-- happen together here, so no registration made meanwhile is lost. Those cache keys
-- are the one kind of key not in KEYS (the sets' members, known only here): a budget of
-- 0 (on a cluster, where they live in other slots, or with CACHEOPS_STRICT_KEYS) leaves
-- them all to the client, which deletes them in chunks; past the bound it does too, as
-- a big invalidation must not block Redis for long.
--
-- Each table's epoch is replaced too (where there is one): an insideout miss that found
-- stamps missing, and so had nothing here to delete, drops its store
-- (store_insideout_fresh.lua). The new epoch is a digest of the old one and this call's
-- token, so it never repeats one an epoch held before.
-- Both storage modes are handled whichever is configured here (a deploy switching modes
-- runs both for a while): a conj key that is a set has its cache keys deleted, one that
-- is a stamp is deleted, and epochs are replaced.
--
-- The cache keys left to the client are also kept in a handover set, named after this
-- call, for a day: a call run again because its reply was lost (a connection failing,
-- a client retrying) finds its conj sets gone, and hands over the keys its first run
-- left instead of none. The client deletes the set with the keys.
--
-- The members read here are bounded (a conj set can grow to millions, and a script
-- blocks Redis while it runs): a set that would take the count read past the limit is
-- renamed, O(1), to its drain set (<handover set>:<n>, in the same slot), which the
-- client empties in bounded steps, deleting its cache keys before it removes them
-- from it. The renaming takes the set with every registration made so far, as
-- deleting it did.
-- On a Redis Cluster a call has one table's keys: they all carry its tag ({<table>}).
--
-- KEYS: the schemes set of each table, the epoch key of each table, the handover set,
--       the conjunction keys, then the drain set of each conjunction key
-- ARGV: the most cache keys to delete here, the most conj set members to read here, a
--       fresh token, the number of tables, then for each table: the number of schemes
--       its conjunction keys were derived from, and those schemes
-- Returns {0, schemes in use by table} where a scheme in use was not given, else
--         {1, schemes in use by table, cache keys left to delete, conj keys deleted,
--          cache keys deleted here, drain sets left to the client}.
local budget, read_limit, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ntables = tonumber(ARGV[4])
local nconjs = (#KEYS - 2 * ntables - 1) / 2
local handover = KEYS[2 * ntables + 1]

local in_use, complete, a = {}, true, 5
for t = 1, ntables do
    local given = {}
    for i = a + 1, a + tonumber(ARGV[a]) do
        given[ARGV[i]] = true
    end
    a = a + 1 + tonumber(ARGV[a])
    in_use[t] = redis.call('smembers', KEYS[t])
    for _, scheme in ipairs(in_use[t]) do
        if not given[scheme] then
            complete = false
        end
    end
end
local function conj_key(n)
    return KEYS[2 * ntables + 1 + n]
end
local function drain_key(n)
    return KEYS[2 * ntables + 1 + nconjs + n]
end

-- this call ran before (its reply was lost): hand over what its first run left
local drains = {}
for n = 1, nconjs do
    if redis.call('exists', drain_key(n)) == 1 then
        drains[#drains + 1] = drain_key(n)
    end
end
if #drains > 0 or redis.call('exists', handover) == 1 then
    return {1, in_use, redis.call('smembers', handover), 0, 0, drains}
end
-- only a first run checks: a run again hands over what its first, complete, run left,
-- and a scheme added since comes from a later read
if not complete then
    return {0, in_use}
end

for e = ntables + 1, 2 * ntables do
    -- derived from the one it replaces: a run of this call again (its reply lost) can't
    -- bring back an epoch a later write replaced, as ARGV's own could
    local epoch = redis.pcall('get', KEYS[e])
    if type(epoch) == 'table' then  -- not a string: replaced whole
        redis.call('set', KEYS[e], redis.sha1hex(token))
    elseif epoch then  -- no epoch: no miss read one
        redis.call('set', KEYS[e], redis.sha1hex(epoch .. token))
    end
end

local members, read, conjs_deleted = {}, 0, 0
for n = 1, nconjs do
    local conj = conj_key(n)
    local size = redis.pcall('scard', conj)  -- an error: a stamp (insideout mode)
    if type(size) ~= 'number' then
        conjs_deleted = conjs_deleted + redis.call('del', conj)
    elseif size > 0 then
        if read + size <= read_limit then
            for _, member in ipairs(redis.call('smembers', conj)) do
                members[#members + 1] = member
            end
            read = read + size
            redis.call('del', conj)
        else
            redis.call('rename', conj, drain_key(n))
            drains[#drains + 1] = drain_key(n)
        end
        conjs_deleted = conjs_deleted + 1
    end
end

-- DEL, not UNLINK: cache values are strings, which UNLINK frees in place all the same
local here, deleted = math.min(budget, #members), 0
for i = 1, here, 1000 do
    deleted = deleted + redis.call('del', unpack(members, i, math.min(i + 999, here)))
end
local left = {}
for i = here + 1, #members do
    left[#left + 1] = members[i]
end
for i = 1, #left, 1000 do
    redis.call('sadd', handover, unpack(left, i, math.min(i + 999, #left)))
end
if #left > 0 then
    redis.call('expire', handover, 86400)
end
return {1, in_use, left, conjs_deleted, deleted, drains}
