-- Runs an Argo CD health script the way Argo CD does, as far as a stock Lua can.
--
--   lua5.4 harness.lua SCRIPT OBJECT [argocd|noos]
--
-- OBJECT is a Lua file that returns the resource as a table (tests/argocd/lua.py writes it
-- from JSON, as Argo CD's decodeValue does). SCRIPT runs as a chunk whose return value is
-- the health: the `obj` global holds the resource, and the environment has only
--   * base functions that neither read files nor load code (no dofile, loadfile, load,
--     loadstring, require, collectgarbage),
--   * table, and, in "argocd" mode, os.time and os.date (Argo CD's safe os); "noos" mode
--     has no os at all,
-- which is a subset of what Argo CD opens (base, package, table, a time/date os). There is
-- no string, math, io or debug library, and strings lose their methods (`s:sub(...)`), as
-- in gopher-lua without the string library. Reading an undefined global is an error here,
-- where Argo CD would quietly give nil: it is a typo or a library Argo CD lacks.
--
-- Prints the status on the first line, then "message" or "nomessage" on the second, then
-- the message. Exit status: 0 ok, 2 usage, 3 the script raised an error, 4 the script
-- returned no valid health.

local script_path, object_path, mode = arg[1], arg[2], arg[3] or "argocd"
if script_path == nil or object_path == nil or (mode ~= "argocd" and mode ~= "noos") then
  io.stderr:write("usage: harness.lua SCRIPT OBJECT [argocd|noos]\n")
  os.exit(2)
end

local compile = loadstring or load
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local object = assert(compile(read(object_path), "=object"))()
local source = read(script_path)

local env = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = pcall, rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
  setmetatable = setmetatable, getmetatable = getmetatable, tonumber = tonumber,
  tostring = tostring, type = type, unpack = unpack, xpcall = xpcall, _VERSION = _VERSION,
  table = {
    concat = table.concat, insert = table.insert, remove = table.remove, sort = table.sort,
  },
  obj = object,
}
if mode == "argocd" then
  env.os = { time = os.time, date = os.date }
end
env._G = env
setmetatable(env, {
  __index = function(_, name)
    error("undefined global '" .. tostring(name) .. "' (not in Argo CD's Lua environment)", 2)
  end,
})

local chunk, err
if setfenv then -- Lua 5.1
  chunk, err = loadstring(source, "=health.lua")
  if chunk then
    setfenv(chunk, env)
  end
else
  chunk, err = load(source, "=health.lua", "t", env)
end
if not chunk then
  io.stderr:write("health.lua does not compile: " .. tostring(err) .. "\n")
  os.exit(3)
end

-- Strings without methods, as in gopher-lua without the string library.
debug.setmetatable("", nil)

local ok, hs = pcall(chunk)
if not ok then
  io.stderr:write("health.lua raised an error: " .. tostring(hs) .. "\n")
  os.exit(3)
end
if type(hs) ~= "table" then
  io.stderr:write("health.lua returned a " .. type(hs) .. ", not a table\n")
  os.exit(4)
end
local valid = {
  Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true,
  Unknown = true,
}
if not valid[hs.status] then
  io.stderr:write("health.lua returned an invalid status: " .. tostring(hs.status) .. "\n")
  os.exit(4)
end
if hs.message ~= nil and type(hs.message) ~= "string" then
  io.stderr:write("health.lua returned a " .. type(hs.message) .. " message\n")
  os.exit(4)
end
for key in pairs(hs) do
  if key ~= "status" and key ~= "message" then
    io.stderr:write("health.lua returned an unknown field: " .. tostring(key) .. "\n")
    os.exit(4)
  end
end
io.write(hs.status, "\n")
if hs.message ~= nil then
  io.write("message\n", hs.message)
else
  io.write("nomessage\n")
end
