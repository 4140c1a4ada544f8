-- Publish one event: append it to the channel's history and fan it out live, atomically.
-- KEYS[1]: the channel's history stream (bounded: trimmed to exactly ARGV[2] entries on
--          every append; optionally also expires ARGV[5] ms after the last publish)
-- ARGV[1]: the event's data, as JSON text
-- ARGV[2]: history length (MAXLEN, >= 1)
-- ARGV[3]: 1 to SPUBLISH (sharded pub/sub, Cluster), 0 to PUBLISH
-- ARGV[4]: 1 to also PUBLISH classically (pattern subscribers on a Cluster), else 0
-- ARGV[5]: history TTL in milliseconds, 0 for none
-- ARGV[6]: the pub/sub channel name. Not declared in KEYS: it is no key, and a Cluster
--          answers TRYAGAIN to a script whose declared keys are partly missing while their
--          slot migrates (every publish would fail for the whole move). It carries the
--          stream's hash tag, so SPUBLISH stays on the stream's slot.
-- ARGV[7]: the publishing span's W3C traceparent, "" for none (redkit.otel; at most 128
--          bytes on one line, else dropped; kept in the history entry's field t and in the
--          live message)
-- Returns: the event id (the stream entry id, which carries the server's time)
--
-- The live message is "<id>\n<data>", or "<id>\nt:<traceparent>\n<data>" with a trace
-- context (compact JSON data never holds a raw newline). Nothing else is read or written:
-- a subscriber
-- notices what it missed by id (its connection dropped: it reads history after its last
-- id), and a resume is exact as long as that last id is still in history.
local tp = ARGV[7]
if #tp > 128 or string.find(tp, '\n', 1, true) then tp = '' end  -- one bounded line
local id, message
if tp == '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'd', ARGV[1])
  message = id .. '\n' .. ARGV[1]
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'd', ARGV[1], 't', tp)
  message = id .. '\nt:' .. tp .. '\n' .. ARGV[1]
end
if ARGV[5] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if ARGV[3] == '1' then
  redis.call('SPUBLISH', ARGV[6], message)
else
  redis.call('PUBLISH', ARGV[6], message)
end
if ARGV[4] == '1' then
  redis.call('PUBLISH', ARGV[6], message)
end
return id
