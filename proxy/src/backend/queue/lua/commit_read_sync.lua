redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], 2592000000)
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'unsynced', -tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[3], 'synced', tonumber(ARGV[3]))
  redis.call('HDEL', KEYS[3], 'syncing')
  redis.call('HINCRBY', KEYS[3], 'syncs', 1)
end
local acknowledged = tonumber(redis.call('HGET', KEYS[2], 'rev') or '0')
local synced = tonumber(redis.call('HGET', KEYS[2], 'synced') or '0')
if acknowledged > synced then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX') then return 1 end
return 0
