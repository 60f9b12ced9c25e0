--- reverb.heap: the loop's timers, a binary min-heap.
--
-- Entries are tables with a deadline `t`; ties keep insertion order (a
-- sequence number `n`), so two sleeps of the same length wake in the order
-- they began. Cancelling is lazy: the owner clears `entry.co` and the loop
-- drops the entry when it reaches the top, or, when cancelled entries
-- pile up, keeps only the others (filter).

local floor = math.floor

local function before(a, b)
  local ta, tb = a.t, b.t
  return ta < tb or (ta == tb and a.n < b.n)
end

local function push(h, e)
  local n = h.size + 1
  h.size, h.seq = n, h.seq + 1
  e.n = h.seq
  while n > 1 do
    local p = floor(n / 2)
    if not before(e, h[p]) then break end
    h[n] = h[p]
    n = p
  end
  h[n] = e
end

local function pop(h)
  local top, size = h[1], h.size
  local last = h[size]
  h[size] = nil
  size = size - 1
  h.size = size
  if size > 0 then
    local i = 1
    while true do
      local c = 2 * i
      if c > size then break end
      if c < size and before(h[c + 1], h[c]) then c = c + 1 end
      if not before(h[c], last) then break end
      h[i] = h[c]
      i = c
    end
    h[i] = last
  end
  return top
end

local function new()
  return { size = 0, seq = 0 }
end

--- A new heap of the entries of h that keep(e) is true for (a sorted
-- array is a heap; a new table, since Lua never shrinks an old one).
local function filter(h, keep)
  local kept, n = { size = 0, seq = h.seq }, 0
  for i = 1, h.size do
    local e = h[i]
    if keep(e) then
      n = n + 1
      kept[n] = e
    end
  end
  table.sort(kept, before)
  kept.size = n
  return kept
end

return { new = new, push = push, pop = pop, filter = filter }
