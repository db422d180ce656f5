if tonumber(redis.call('HGET', KEYS[2], 'syncs') or '0') ~= tonumber(ARGV[3]) then return 0 end
local stored = redis.pcall('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
if type(stored) == 'table' and stored.ok then return 1 end
return 0
