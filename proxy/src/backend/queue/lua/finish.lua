-- KEYS[9]: the key that stands for none (in the store's hash slot, never written)
if KEYS[8] ~= KEYS[9] then
  local holder = redis.call('GET', KEYS[8])
  if not holder then
    redis.call('SET', KEYS[8], ARGV[11], 'PX', ARGV[12])
  elseif holder ~= ARGV[11] then
    return 0
  end
end
if ARGV[3] ~= '' then
  local synced = tonumber(redis.call('HGET', KEYS[2], 'synced') or '0')
  if tonumber(ARGV[3]) > synced then redis.call('HSET', KEYS[2], 'synced', ARGV[3]) end
end
local acknowledged = tonumber(redis.call('HGET', KEYS[2], 'rev') or '0')
local synced = tonumber(redis.call('HGET', KEYS[2], 'synced') or '0')
local settled = acknowledged <= synced
if KEYS[1] ~= KEYS[9] and settled and (ARGV[4] == '' or acknowledged == tonumber(ARGV[4])) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if settled then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 2592000000)
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[5], '*', 'entry', ARGV[5], 'op', ARGV[7], 'error', ARGV[6])
  local dropped = redis.call('XTRIM', KEYS[5], 'MAXLEN', ARGV[9])
  if dropped > 0 then redis.call('INCRBY', KEYS[7], dropped) end
end
if KEYS[6] ~= KEYS[9] and ARGV[8] ~= '' then redis.call('XADD', KEYS[6], '*', 'op', ARGV[8]) end
redis.call('XACK', KEYS[4], ARGV[10], ARGV[5])
redis.call('XDEL', KEYS[4], ARGV[5])
return 1
