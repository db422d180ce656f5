if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'syncing', ARGV[1], 'syncing_fields', ARGV[2])
return 1
