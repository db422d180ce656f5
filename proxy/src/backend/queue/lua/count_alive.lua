return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
