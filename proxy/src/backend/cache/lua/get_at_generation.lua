local generation = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('PEXPIRE', KEYS[2], 2592000000)
redis.call('PEXPIRE', KEYS[3], 2592000000)
generation = string.format('%d', generation)
local read_syncs = redis.call('GET', KEYS[3]) or '0'
return {generation, read_syncs, redis.call('GET', ARGV[1] .. generation .. ARGV[2])}
