if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOGROUP the write stream is gone') end
local silent_since = now - tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local found, dead = {}, 0
local function collect(name, count)
  for _, entry in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', count, name)) do
    table.insert(found, entry[1])
    table.insert(found, name)
    table.insert(found, entry[4])
  end
  return #found / 3
end
local own_pending = 0
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  local name, pending = fields['name'], tonumber(fields['pending'])
  if name == ARGV[2] then
    own_pending = pending
  elseif tonumber(redis.call('ZSCORE', KEYS[2], name) or '0') < silent_since then
    if pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    elseif dead < max then
      dead = collect(name, max - dead)
    end
  end
end
if own_pending > 0 then collect(ARGV[2], tonumber(ARGV[5])) end
return found
