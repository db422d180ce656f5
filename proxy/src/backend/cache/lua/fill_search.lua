if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[3]) then return 0 end
local synced = {}
for i = 3, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'synced', 'syncing')
  if tonumber(fields[2] or '0') > 0 then return 0 end
  synced[#synced + 1] = '"' .. ARGV[i + 1] .. '":' .. (fields[1] or '0')
end
local stored = redis.pcall('SET', KEYS[1], ARGV[1] .. '{' .. table.concat(synced, ',') .. '}}', 'PX', ARGV[2])
if type(stored) == 'table' and stored.ok then return 1 end
return 0
