"""Every Lua script the store sends with EVAL, in one place.

The log scripts name segment keys they derive from the one passed in KEYS (``base .. ':' .. s``,
as ``KeyLayout.segment`` does), so they rely on Upstash's default global script lock (no
``allow-key-locking`` flag).
"""

from __future__ import annotations

# append(counter, base, text, cap, rec): appends whole records of `rec` characters from `text` to
# the log whose segment 0 is `base`, never letting a segment pass `cap` characters (a multiple of
# `rec`); a full segment moves the counter on. Returns the last segment written to.
APPEND_FUNCTION = """
local function segment_key(base, s)
  if s == 0 then return base end
  return base .. ':' .. s
end
local function append(counter, base, text, cap, rec)
  local s = tonumber(redis.call('GET', counter) or '0')
  local pos = 1
  while pos <= #text do
    local key = segment_key(base, s)
    local room = math.floor((cap - redis.call('STRLEN', key)) / rec) * rec
    if room <= 0 then
      s = s + 1
      redis.call('SET', counter, s)
    else
      local piece = string.sub(text, pos, pos + room - 1)
      redis.call('APPEND', key, piece)
      pos = pos + #piece
    end
  end
  return s
end
"""

# KEYS: segment counter, log (segment 0).  ARGV: records, segment cap, record size (characters).
APPEND_LUA = (
    APPEND_FUNCTION
    + "return append(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))\n"
)

# KEYS: entry, exact, ids, log, epoch, gen, segment counter.
# ARGV: entry JSON, id, tombstone record, generation, segment cap, record size.
# Deletes the entry, its exact key only while that still holds this entry (a newer answer for the
# same prompt keeps its key), and appends the tombstone if `log` is the current generation's.
DELETE_LUA = (
    APPEND_FUNCTION
    + """
local removed = redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('ZREM', KEYS[3], ARGV[2])
local current = (redis.call('GET', KEYS[5]) or '0') .. '.' .. (redis.call('GET', KEYS[6]) or '0')
if ARGV[3] ~= '' and current == ARGV[4] then
  append(KEYS[7], KEYS[4], ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
end
return {removed, current}
"""
)

# KEYS: epoch, gen, old log, new log, old segment counter, new segment counter.
# ARGV: expected epoch, expected gen, segment and offset read up to, new gen, segment cap,
# record size.  The compaction switch, only if nobody switched since the compactor read the old
# log: carries over what was appended to the old log meanwhile, makes the new log permanent,
# switches and deletes the old log.
SWITCH_LUA = (
    APPEND_FUNCTION
    + """
local function drop(base, counter)
  for s = 0, tonumber(redis.call('GET', counter) or '0') do
    redis.call('DEL', segment_key(base, s))
  end
  redis.call('DEL', counter)
end
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2]
then
  drop(KEYS[4], KEYS[6])
  return 0
end
local first, cap, rec = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7])
for s = first, tonumber(redis.call('GET', KEYS[5]) or '0') do
  local from = 0
  if s == first then from = tonumber(ARGV[4]) end
  local tail = redis.call('GETRANGE', segment_key(KEYS[3], s), from, -1)
  if #tail > 0 then append(KEYS[6], KEYS[4], tail, cap, rec) end
end
for s = 0, tonumber(redis.call('GET', KEYS[6]) or '0') do
  redis.call('PERSIST', segment_key(KEYS[4], s))
end
redis.call('PERSIST', KEYS[6])
redis.call('SET', KEYS[2], ARGV[5])
drop(KEYS[3], KEYS[5])
return 1
"""
)

# KEYS: this window's counter, the previous window's.  ARGV: the counter's TTL (ms).
# INCR (expiring after the TTL from the first hit) and GET of the previous window, atomically.
COUNT_WINDOW_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

# KEYS: the lock.  ARGV: the holder's token.  Deletes the lock only while the token holds it.
UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the stats hash.  ARGV: name, increment, name, increment, ...: every increment of one
# answer in one atomic command (a script runs alone), rather than a transaction of one
# HINCRBYFLOAT command per counter.
HINCR_MANY_LUA = """
for i = 1, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""
