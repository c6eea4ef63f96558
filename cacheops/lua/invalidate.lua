-- Invalidate tables by rows: for each scheme in use on a table, build the conjunction
-- key each row falls into and delete it. A row lacking a column a scheme needs matches
-- any value there: for it a SCAN pattern is returned, for the client to invalidate what
-- matches. In conj-set mode the cache keys the deleted sets referenced are deleted too,
-- up to a bound, so one write costs one round trip; popping a set's members and
-- deleting it happen together here, so no registration made meanwhile is lost.
-- Past the bound (and always on a cluster, where cache keys live in other slots) the
-- keys are returned for the client to delete in chunks: a big invalidation must not
-- block Redis for long.
-- The conjunction keys are derived from the schemes sets, and carry the same table tag
-- as their table's schemes set, so they live in its slot on a cluster.
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
-- call, for a day: a call run again because its reply was lost (a
-- connection failing, a client retrying) finds its conj sets gone, and hands over the
-- keys its first run left instead of none. The client deletes the set with the keys.
--
-- The members read here are bounded (a conj set can grow to millions, and a script
-- blocks Redis while it runs): a set that would take the count read past the limit is
-- renamed, O(1), to a drain set <handover set>:<n>, in the same slot, which the client
-- empties in bounded steps, deleting its cache keys before it removes them from it.
-- The renaming takes the set with every registration made so far, as deleting it did.
--
-- KEYS: the schemes set of each table, then the epoch key of each table, then the
--       handover set
-- ARGV: the most cache keys to delete here, the most conj set members to read here, a
--       fresh token, then for each table: its conj key prefix, a JSON list of rows,
--       each a {column: canonical value string} object
-- Returns {cache keys left to delete, SCAN patterns of conj keys, conj keys deleted,
--          cache keys deleted here, drain sets left to the client}.
local budget, read_limit, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ntables = (#ARGV - 3) / 2

local function glob_escape(s)
    return (string.gsub(s, '[%*%?%[%]\\]', '\\%0'))
end

local conj_keys, seen, patterns = {}, {}, {}
for t = 1, ntables do
    local conj_prefix = ARGV[2 + 2 * t]
    local rows = cjson.decode(ARGV[3 + 2 * t])
    for _, scheme in ipairs(redis.call('smembers', KEYS[t])) do
        local columns = {}
        for column in string.gmatch(scheme, '[^,]+') do
            columns[#columns + 1] = column
        end
        for _, row in ipairs(rows) do
            local parts = {}
            for i, column in ipairs(columns) do
                local value = row[column]
                if value == nil then
                    parts = nil
                    break
                end
                parts[i] = column .. '=' .. value
            end
            if parts then
                local conj = conj_prefix .. table.concat(parts, '&')
                if not seen[conj] then
                    seen[conj] = true
                    conj_keys[#conj_keys + 1] = conj
                end
            else  -- rare: escaping only here keeps the common case cheap
                local globs = {}
                for i, column in ipairs(columns) do
                    local value = row[column]
                    globs[i] = value == nil and glob_escape(column) .. '=*'
                        or glob_escape(column .. '=' .. value)
                end
                patterns[#patterns + 1] = glob_escape(conj_prefix) .. table.concat(globs, '&')
            end
        end
    end
end

local handover = KEYS[2 * ntables + 1]
local function drain_name(n)
    return handover .. ':' .. n
end

-- this call ran before (its reply was lost): hand over what its first run left
local drains = {}
for n = 1, #conj_keys do
    if redis.call('exists', drain_name(n)) == 1 then
        drains[#drains + 1] = drain_name(n)
    end
end
if #drains > 0 or redis.call('exists', handover) == 1 then
    return {redis.call('smembers', handover), patterns, 0, 0, drains}
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
for n, conj in ipairs(conj_keys) do
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
            redis.call('rename', conj, drain_name(n))
            drains[#drains + 1] = drain_name(n)
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
return {left, patterns, conjs_deleted, deleted, drains}
