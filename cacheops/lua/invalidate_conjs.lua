-- Invalidate whole conjunction keys (a model or a table at once): delete them and
-- return the cache keys the sets among them (conj-set mode) referenced, for the client
-- to delete; stamps (insideout mode) are just deleted, whichever mode is configured.
-- Reading the members and deleting the sets happen together, so no registration
-- made meanwhile is lost.
--
-- KEYS: conjunction keys (sets in conj-set mode, stamps in insideout mode)
-- ARGV: none
-- Returns the cache keys to delete.
local members = {}
for _, conj in ipairs(KEYS) do
    if redis.call('type', conj).ok == 'set' then
        for _, member in ipairs(redis.call('smembers', conj)) do
            members[#members + 1] = member
        end
    end
    redis.call('del', conj)
end
return members
