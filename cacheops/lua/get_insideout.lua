-- Insideout mode read: return a cached value only if the stamps of its conjunctions
-- are all there and unchanged since it was computed.
--
-- KEYS: cache key, then the conjunction stamp keys (in the order prepare_insideout used)
-- ARGV: none
-- Returns the serialized value, or nil when missing or invalidated.
local value = redis.call('get', KEYS[1])
if not value then
    return nil
end
local stamps = {}
for i = 2, #KEYS do
    local stamp = redis.call('get', KEYS[i])
    if not stamp then
        return nil
    end
    stamps[i - 1] = stamp
end
if string.sub(value, 1, 40) ~= redis.sha1hex(table.concat(stamps, ' ')) then
    return nil
end
return string.sub(value, 41)
