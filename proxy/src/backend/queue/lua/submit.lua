-- KEYS[6]: the key that stands for none (in the store's hash slot, never written)
if KEYS[3] ~= KEYS[6] then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
if ARGV[7] ~= '' then
  local current = redis.call('HGET', KEYS[5], 'rev') or '0'
  if tonumber(current) ~= tonumber(ARGV[7]) then return {2, current} end
end
if KEYS[3] ~= KEYS[6] then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5]) end
local revision = redis.call('HINCRBY', KEYS[5], 'rev', 1)
redis.call('PERSIST', KEYS[5])
redis.call('SET', KEYS[1], ARGV[1])
local entry = redis.call('XADD', KEYS[2], '*', 'op', ARGV[3], 'rev', revision)
if ARGV[6] == '1' then
  redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], 2592000000)
end
return {1, entry, tostring(revision)}
