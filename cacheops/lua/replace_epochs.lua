-- Replace tables' epochs (invalidate_model(), invalidate_all()): a miss that read the
-- old ones drops its store. A new epoch is a digest of the one it replaces and this
-- call's token, as in invalidate.lua: run again (its reply lost, a client retrying),
-- the call can't bring back an epoch a later write replaced.
--
-- KEYS: epoch keys (one that doesn't exist is left so: no miss read it); on a Redis
--       Cluster one, tagged with its table ({<table>})
-- ARGV: a fresh token
-- Returns how many epochs it replaced.
local replaced = 0
for _, key in ipairs(KEYS) do
    local epoch = redis.pcall('get', key)
    if type(epoch) == 'table' then  -- not a string: replaced whole
        redis.call('set', key, redis.sha1hex(ARGV[1]))
        replaced = replaced + 1
    elseif epoch then
        redis.call('set', key, redis.sha1hex(epoch .. ARGV[1]))
        replaced = replaced + 1
    end
end
return replaced
