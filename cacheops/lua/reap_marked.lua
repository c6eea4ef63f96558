-- Conj-set mode maintenance on a Redis Cluster, where a conj set and its members (cache
-- keys) live in different slots: reap_conj.lua's check and removal can't happen in one
-- script. reaper.py first copies the members to check into the set's reaping set, then
-- checks which exist, then runs this: it removes from the conj set those found missing
-- that are still in the reaping set. register.lua takes a key it registers out of the
-- reaping set, so a key re-created and registered after the check is kept.
--
-- KEYS: the conjunction set, its reaping set (both with the table's tag)
-- ARGV: the members found missing
-- Returns {number of members removed, members left in the set}; {0, -1} when the key
-- is not a set (gone, or a stamp of insideout mode).
local conj, reaping = KEYS[1], KEYS[2]
local removed = 0
if redis.call('type', conj).ok ~= 'set' then
    redis.call('del', reaping)
    return {0, -1}
end
for i = 1, #ARGV do
    if redis.call('sismember', reaping, ARGV[i]) == 1 then
        removed = removed + redis.call('srem', conj, ARGV[i])
    end
end
redis.call('del', reaping)
return {removed, redis.call('scard', conj)}
