-- Conj-set mode maintenance: drop from a conjunction set the cache keys that no longer
-- exist (they expired), which invalidation would otherwise keep reading. The EXISTS
-- check and the SREM happen together here: a key re-created after a separate check
-- would have been re-registered by prepare.lua's SADD (a no-op, the member being there
-- still), and a later SREM would silently unregister it, leaving a live entry that
-- invalidation can't reach.
-- One Redis only: on a cluster the members live in other slots than their set, and
-- reap_marked.lua with reaper.py does this in three steps.
--
-- KEYS: the conjunction set, then the candidate cache keys (its members)
-- ARGV: none
-- Returns {number of members removed, members left in the set}; {0, -1} when the key
-- is not a set (gone, or a stamp of insideout mode).
local conj = KEYS[1]
if redis.call('type', conj).ok ~= 'set' then
    return {0, -1}
end
local removed = 0
for i = 2, #KEYS do
    if redis.call('exists', KEYS[i]) == 0 then
        removed = removed + redis.call('srem', conj, KEYS[i])
    end
end
return {removed, redis.call('scard', conj)}
