redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 2592000000)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'unsynced', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'synced', tonumber(ARGV[1]))
redis.call('HDEL', KEYS[1], 'syncing', 'syncing_fields')
return redis.call('HINCRBY', KEYS[1], 'syncs', 1)
