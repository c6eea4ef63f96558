-- Invalidate a table by rows: for each scheme in use, build the conjunction key each
-- row falls into and delete it. A row lacking a column a scheme needs matches any value
-- there: for it a SCAN pattern is returned, for the client to invalidate what matches. In conj-set mode, the keys that a deleted set referenced
-- are returned for the client to delete: popping a set's members and deleting it happen
-- together here, so no registration made meanwhile is lost.
-- The conjunction keys are derived from the schemes set, and all carry the same table
-- tag as KEYS[1], so they live in its slot on a cluster.
--
-- KEYS: the table's schemes set
-- ARGV: conj key prefix of the table, mode ('conj' or 'insideout'),
--       a JSON list of rows, each a {column: canonical value string} object
-- Returns {cache keys to delete (none in insideout mode), SCAN patterns of conj keys}.
local conj_prefix, mode = ARGV[1], ARGV[2]
local rows = cjson.decode(ARGV[3])
local schemes = redis.call('smembers', KEYS[1])

local function glob_escape(s)
    return (string.gsub(s, '[%*%?%[%]\\]', '\\%0'))
end

local conj_keys, seen, patterns = {}, {}, {}
for _, scheme in ipairs(schemes) do
    for _, row in ipairs(rows) do
        local parts, globs, complete = {}, {}, true
        for column in string.gmatch(scheme, '[^,]+') do
            local value = row[column]
            if value == nil then
                complete = false
                globs[#globs + 1] = glob_escape(column) .. '=*'
            else
                parts[#parts + 1] = column .. '=' .. value
                globs[#globs + 1] = glob_escape(column .. '=' .. value)
            end
        end
        if complete then
            local conj = conj_prefix .. table.concat(parts, '&')
            if not seen[conj] then
                seen[conj] = true
                conj_keys[#conj_keys + 1] = conj
            end
        else
            patterns[#patterns + 1] = glob_escape(conj_prefix) .. table.concat(globs, '&')
        end
    end
end

local members = {}
if mode == 'conj' then
    for _, conj in ipairs(conj_keys) do
        local set = redis.pcall('smembers', conj)  -- an error: a stamp left by insideout mode
        if not set['err'] then
            for _, member in ipairs(set) do
                members[#members + 1] = member
            end
        end
    end
end
for i = 1, #conj_keys, 1000 do
    redis.call('del', unpack(conj_keys, i, math.min(i + 999, #conj_keys)))
end
return {members, patterns}
