local acknowledged = tonumber(redis.call('HGET', KEYS[2], 'rev') or '0')
local synced = tonumber(redis.call('HGET', KEYS[2], 'synced') or '0')
if acknowledged > synced then return 0 end
return redis.call('DEL', KEYS[1])
