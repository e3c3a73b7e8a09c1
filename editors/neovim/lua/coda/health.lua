--- :checkhealth coda: is the server installed (and which version), is it attached, is the
--- model ready, and which settings it gets. Each problem comes with what to do about it.
local M = {}

local health = vim.health
local INSTALL = {
  "install the server: pip install -e /path/to/coda-lsp (check with coda-lsp --version)",
  "or give its full path: require('coda').setup({ cmd = { '/path/to/venv/bin/coda-lsp' } })",
}

local function check_binary(opts)
  local config = require("coda.config")
  local cmd = config.command(opts)
  if vim.fn.executable(cmd[1]) == 0 then
    health.error(cmd[1] .. " is not executable (not found on PATH)", INSTALL)
    return
  end
  health.ok("server command: " .. table.concat(cmd, " "))
  local base = vim.deepcopy(opts.cmd or { "coda-lsp" })
  local ok, run = pcall(vim.system, vim.list_extend(base, { "--version" }), { text = true })
  local done = ok and run:wait(10000)
  if done and done.code == 0 and vim.trim(done.stdout or "") ~= "" then
    health.ok("version: " .. vim.trim(done.stdout))
  else
    local why = not ok and tostring(run) or vim.trim((done and done.stderr) or "timed out")
    health.warn("`" .. table.concat(base, " ") .. "` failed: " .. why, INSTALL)
  end
end

local function check_clients(opts)
  local clients = vim.lsp.get_clients({ name = "coda" })
  if #clients == 0 then
    health.warn("not attached to any buffer", {
      "open a file of one of these filetypes: " .. table.concat(opts.filetypes, ", "),
      "the server's own errors are in :LspLog",
    })
    return
  end
  for _, client in ipairs(clients) do
    local buffers = vim.tbl_keys(client.attached_buffers or {})
    table.sort(buffers)
    local names = vim.tbl_map(function(b)
      return vim.fn.fnamemodify(vim.api.nvim_buf_get_name(b), ":~:.")
    end, buffers)
    health.ok(("attached (client %d) to %d buffer(s): %s"):format(
      client.id, #buffers, table.concat(names, ", ")))
  end
end

local function check_model(status)
  if not status then
    health.warn("no coda/status from the server yet", { "wait for the model to load" })
  elseif status.state == "ready" then
    health.ok("model ready" .. (status.message ~= "" and (": " .. status.message) or ""))
  elseif status.state == "loading" then
    health.info("model loading: " .. (status.message or ""))
  else
    health.error("model: " .. (status.message or status.state),
      { "check the model path (setup({ model = ... })) and :LspLog" })
  end
end

--- Which model serves what (the status's `models`: role -> model, device, dtype).
local function check_roles(status)
  local models = status and status.models
  if type(models) ~= "table" or vim.tbl_isempty(models) then
    return
  end
  local what = { typing = "typing (ghost text)", fill = "fill (Fill this hole, <M-\\>)" }
  for _, role in ipairs({ "typing", "fill" }) do
    local m = models[role]
    if type(m) == "table" then
      health.info(("%s: %s on %s (%s)"):format(what[role], m.model, m.device, m.dtype))
    end
  end
end

function M.check()
  local coda = require("coda")
  health.start("coda: server")
  check_binary(coda.options)
  check_clients(coda.options)
  check_model(coda.status)
  check_roles(coda.status)
  health.start("coda: settings")
  health.info("completions " .. (coda.enabled() and "on" or "off (:CodaToggle)"))
  health.info("settings sent to the server: "
    .. vim.inspect(coda.server_settings(), { newline = " ", indent = "" }))
  health.info("filetypes: " .. table.concat(coda.options.filetypes, ", "))
end

return M
