--- Starting coda-lsp for vim.lsp so that a server that cannot start is said in one line.
---
--- coda-lsp checks its flags and model folder before it speaks LSP, and when one is wrong it
--- prints one line on stderr and exits. vim.lsp only writes a server's stderr to its log and
--- then says "Client coda quit with exit code 2 … Check log for errors"; this keeps the
--- server's last stderr line and says that instead, with the setup() option that fixes it.
--- A server that exits after it has spoken is left to vim.lsp, as before.
local config = require("coda.config")

local M = {}

--- The server's reason as one line naming the fix: the server names the setup() option
--- itself for the model ($CODA_LSP_MODEL_SETTING); other reasons get a pointer to setup().
---@param reason string|nil  the server's last stderr line
---@param code integer
---@return string
function M.explain(reason, code)
  local line = reason and vim.trim((reason:gsub("%s+", " "))) or ""
  line = line:gsub("^coda%-lsp:%s*", "")
  if line == "" then
    line = ("it exited with status %d (see :LspLog)"):format(code)
  end
  if not line:find("setup()", 1, true) then
    line = line .. " (check cmd, model and device in require('coda').setup(); :checkhealth coda)"
  end
  return "the server did not start: " .. line
end

--- A vim.lsp `cmd` function running `argv` with `env`. `on_failure(message)` is called (on the
--- main loop) when the server exits non-zero before it has said anything.
---@param argv string[]
---@param env table<string, string>
---@param on_failure fun(message: string)
function M.cmd(argv, env, on_failure)
  return function(dispatchers)
    local last_line, heard = nil, false
    local wrapped = setmetatable({}, { __index = dispatchers })
    wrapped.notification = function(...)
      heard = true
      return dispatchers.notification(...)
    end
    wrapped.server_request = function(...)
      heard = true
      return dispatchers.server_request(...)
    end
    wrapped.on_exit = function(code, signal)
      if code ~= 0 and not heard then
        vim.schedule(function()
          on_failure(M.explain(last_line, code))
        end)
        code, signal = 0, 0 -- said above: vim.lsp need not say "quit with exit code" too
      end
      return dispatchers.on_exit(code, signal)
    end
    -- vim.lsp.rpc.start hands stderr only to its log: listen in on the one vim.system call it
    -- makes, for the duration of that call.
    local system = vim.system
    vim.system = function(cmd, opts, on_exit)
      if opts and opts.stderr then
        local log_stderr = opts.stderr
        opts.stderr = function(err, chunk)
          for line in (chunk or ""):gmatch("[^\r\n]+") do
            if vim.trim(line) ~= "" then
              last_line = line
            end
          end
          return log_stderr(err, chunk)
        end
      end
      return system(cmd, opts, on_exit)
    end
    local ok, client = pcall(vim.lsp.rpc.start, argv, wrapped, { env = env })
    vim.system = system
    if not ok then
      error(client, 0)
    end
    return client
  end
end

return M
