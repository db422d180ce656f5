return {redis.call('GET', KEYS[1]), redis.call('HMGET', KEYS[2], 'unsynced', 'syncs', 'last', 'synced', 'syncing')}
