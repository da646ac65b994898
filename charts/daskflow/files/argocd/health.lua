-- Argo CD health check for daskflow.io/v1alpha1 FlowRun.
--
-- Install it under the argocd-cm key resource.customizations.health.daskflow.io_FlowRun:
-- argocd-cm.yaml next to this file is that snippet, generated from this file by
-- hack/sync-argocd-cm.sh (tests/argocd checks that the two never drift).
--
-- status.phase, written by the daskflow operator and runner, maps to:
--   no status, no phase, Pending, Running  -> Progressing
--   Succeeded                              -> Healthy
--   Failed, Cancelled                      -> Degraded
--   anything else                          -> Unknown
-- with a message made of the phase, the task counts, the reason and the message.
--
-- Why Cancelled is Degraded and not Suspended: Argo CD ends a sync hook, and a sync wave
-- waiting for its resources, only on Healthy (done) or Degraded (failed); on Progressing or
-- Suspended it keeps waiting. A cancelled FlowRun never changes again, so Suspended would
-- leave a PostSync hook or a wave waiting forever. And a cancelled run did not do its job.
--
-- Argo CD runs this in gopher-lua (Lua 5.1) with only the base, table and package
-- libraries and an os cut down to time and date: no string, math or io library, and
-- strings have no methods. So this script uses `..`, tostring, type and pairs only, and it
-- must never raise an error (an erroring script gives no health at all).

local function text(value)
  if type(value) == "string" and value ~= "" then
    return value
  end
  if type(value) == "number" then
    return tostring(value)
  end
  return nil
end

local function count(value)
  if type(value) == "number" then
    return value
  end
  return 0
end

-- "3/4 tasks succeeded, 2 running, 1 failed", from status.summary and status.tasks.
local function progress(status, phase)
  local parts = {}
  local summary = status.summary
  if type(summary) == "table" then
    local done = text(summary.progress)
    if done == nil and type(summary.total) == "number" then
      done = tostring(count(summary.succeeded)) .. "/" .. tostring(summary.total)
    end
    if done ~= nil then
      parts[#parts + 1] = done .. " tasks succeeded"
    end
  end
  if (phase == "Running" or phase == "Pending") and type(status.tasks) == "table" then
    local running, retrying = 0, 0
    for _, task in pairs(status.tasks) do
      if type(task) == "table" then
        if task.state == "Running" then
          running = running + 1
        elseif task.state == "Retrying" then
          retrying = retrying + 1
        end
      end
    end
    if running > 0 then
      parts[#parts + 1] = tostring(running) .. " running"
    end
    if retrying > 0 then
      parts[#parts + 1] = tostring(retrying) .. " retrying"
    end
  end
  if type(summary) == "table" and count(summary.failed) > 0 then
    parts[#parts + 1] = tostring(summary.failed) .. " failed"
  end
  if #parts == 0 then
    return nil
  end
  return table.concat(parts, ", ")
end

-- "Failed (2/4 tasks succeeded, 1 failed): TasksFailed: 1 of 4 tasks failed: load"
local function describe(status, phase)
  local out = phase
  local done = progress(status, phase)
  if done ~= nil then
    out = out .. " (" .. done .. ")"
  end
  local reason = text(status.reason)
  local message = text(status.message)
  local detail = nil
  if reason ~= nil and reason ~= phase then
    detail = reason
  end
  if message ~= nil then
    if detail ~= nil then
      detail = detail .. ": " .. message
    else
      detail = message
    end
  end
  if detail ~= nil then
    out = out .. ": " .. detail
  end
  return out
end

-- The Tekton-style Succeeded condition, for a status that carries no phase.
local function succeeded_condition(status)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if type(condition) == "table" and condition.type == "Succeeded" then
      return condition
    end
  end
  return nil
end

local hs = {}
local spec = obj.spec
local cancel = type(spec) == "table" and spec.cancel == true
local status = obj.status
if type(status) ~= "table" then
  status = {}
end
local phase = status.phase
if phase == "" then
  phase = nil
end

if phase == nil then
  local condition = succeeded_condition(status)
  if condition ~= nil and condition.status == "True" then
    hs.status = "Healthy"
  elseif condition ~= nil and condition.status == "False" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  if condition ~= nil and text(condition.message) ~= nil then
    hs.message = text(condition.message)
  elseif cancel then
    hs.message = "Cancel requested; waiting for the daskflow operator to pick up the FlowRun"
  else
    hs.message = "Waiting for the daskflow operator to pick up the FlowRun"
  end
elseif phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = describe(status, phase)
  if cancel then
    hs.message = "Cancel requested (spec.cancel is true); " .. hs.message
  end
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(status, phase)
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = describe(status, phase)
else
  hs.status = "Unknown"
  hs.message = "Unrecognised FlowRun phase: " .. (text(phase) or type(phase))
end
return hs
