--- Coda for Neovim: registers coda-lsp, shows its ghost-text suggestions, and adds
--- :CodaFill (the server's "Fill this hole" code action) with :CodaCancel, :CodaStatus,
--- :CodaToggle and :checkhealth coda.
---
---   require("coda").setup({ model = "/path/to/checkpoint", settings = { steps = 8 } })
---
--- On Neovim >= 0.12 the built-in vim.lsp.inline_completion draws the suggestions; before
--- that coda.ghost does. Completion logic lives in the server, not here.
local api = vim.api
local uv = vim.uv or vim.loop
local config = require("coda.config")
local ghost = require("coda.ghost")

local M = {}

local FILL_TITLE = "Fill this hole"
local FILL_PROGRESS_TITLE = "coda: filling the hole" -- the server's $/progress title
local HAS_011 = vim.fn.has("nvim-0.11") == 1

---@type coda.Options
M.options = config.resolve(nil)
--- Last `coda/status` notification: { state = "loading"|"ready"|"error", message, latencyMs }.
M.status = nil
local builtin = false

local function client_for(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = "coda" })[1]
end

local function call(client, method, ...)
  if HAS_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end

local function on_status(_, result)
  M.status = result
  api.nvim_exec_autocmds("User", { pattern = "CodaStatus", modeline = false, data = result })
end

--- Whether completions are on (:CodaToggle, else settings.enabled).
function M.enabled()
  return config.enabled(M.options)
end

--- The settings the server gets. Always says `enabled`: the server keeps the last value of a
--- setting left out, so turning completions back on must say so.
function M.server_settings()
  local settings = vim.deepcopy(M.options.settings)
  settings.enabled = M.enabled()
  return settings
end
local server_settings = M.server_settings

local missing_said = false
--- vim.lsp only logs a server command that cannot run; say it once, with the fix.
local function check_command()
  local exe = config.command(M.options)[1]
  if missing_said or vim.fn.executable(exe) == 1 then
    return missing_said
  end
  missing_said = true
  vim.notify(("Coda: cannot start the server, %s is not executable. Install it (pip install -e "
    .. "/path/to/coda-lsp) or set cmd in require('coda').setup(); see :checkhealth coda"):format(exe),
    vim.log.levels.WARN)
  return true
end

--- The vim.lsp configuration for coda-lsp (what setup() registers).
function M.lsp_config()
  local opts = M.options
  return {
    name = "coda",
    cmd = config.command(opts),
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = server_settings(),
    settings = { coda = server_settings() },
    handlers = { ["coda/status"] = on_status },
    capabilities = {
      textDocument = { inlineCompletion = { dynamicRegistration = false } },
    },
  }
end

-- An insert-mode key that acts when a suggestion shows and otherwise types itself.
local function map_key(bufnr, lhs, action, desc)
  if not lhs then
    return
  end
  if builtin then
    vim.keymap.set("i", lhs, function()
      if action == "accept" and vim.lsp.inline_completion.get() then
        return ""
      end
      return lhs
    end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = desc })
    return
  end
  vim.keymap.set("i", lhs, function()
    if not ghost[action]() then
      api.nvim_feedkeys(api.nvim_replace_termcodes(lhs, true, false, true), "n", false)
    end
  end, { buffer = bufnr, desc = desc })
end

local function on_attach(bufnr)
  if builtin then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  else
    ghost.attach(bufnr)
  end
  local keys = M.options.keymaps
  map_key(bufnr, keys.accept, "accept", "Coda: accept suggestion")
  if not builtin then
    map_key(bufnr, keys.accept_word, "accept_word", "Coda: accept next word")
    map_key(bufnr, keys.accept_line, "accept_line", "Coda: accept line")
    map_key(bufnr, keys.dismiss, "dismiss", "Coda: dismiss suggestion")
    if keys.suggest then
      vim.keymap.set("i", keys.suggest, M.suggest, { buffer = bufnr, desc = "Coda: suggest now" })
    end
  end
end

--- Accept the whole suggestion; false when none showed (for your own Tab mapping).
function M.accept()
  if builtin then
    return vim.lsp.inline_completion.get() and true or false
  end
  return ghost.accept()
end
--- Ask for a suggestion now (the `suggest` key), with auto_trigger on or off.
function M.suggest()
  if not M.enabled() then
    vim.notify("Coda: completions are off; :CodaToggle turns them on", vim.log.levels.WARN)
    return
  end
  ghost.trigger()
end
M.accept_word = ghost.accept_word
M.accept_line = ghost.accept_line
M.dismiss = function()
  ghost.dismiss()
end
M.visible = ghost.visible

--- The hole fill in flight (at most one): the request it waits on, the server's progress.
---@class coda.FillJob
---@field client vim.lsp.Client
---@field bufnr integer
---@field request_id integer|nil
---@field started number          uv.now() when it started
---@field timer uv.uv_timer_t
---@field percentage integer|nil  from the server's $/progress
---@field done boolean
---@type coda.FillJob|nil
local fill_job = nil

-- The fill's line on the message line: no history, redrawn each second and on progress.
local function show_fill_progress(job)
  local seconds = math.floor((uv.now() - job.started) / 1000)
  local done = job.percentage and (" %d%%,"):format(job.percentage) or ""
  api.nvim_echo({ { ("Coda: filling the hole…%s %d s (:CodaCancel stops it)"):format(done,
    seconds) } }, false, {})
end

-- Ends the fill: the progress line goes, `message` (if any) is said instead.
local function finish_fill(job, message, level)
  if job.done then
    return
  end
  job.done = true
  job.timer:stop()
  job.timer:close()
  if fill_job == job then
    fill_job = nil
  end
  api.nvim_echo({}, false, {})
  if message then
    vim.notify(message, level or vim.log.levels.INFO)
  end
end

local function apply_action(job, tick, action)
  local client, bufnr = job.client, job.bufnr
  if not action.edit and not action.command then
    finish_fill(job, "Coda: the model found nothing to fill in")
    return
  end
  if api.nvim_buf_get_changedtick(bufnr) ~= tick then
    finish_fill(job, "Coda: the buffer changed while filling; try again", vim.log.levels.WARN)
    return
  end
  finish_fill(job)
  if action.edit then
    vim.lsp.util.apply_workspace_edit(action.edit, client.offset_encoding or "utf-16")
  end
  local command = action.command
  if type(command) == "table" and type(command.command) == "string" then
    call(client, "request", "workspace/executeCommand", command, function() end, bufnr)
  end
  api.nvim_exec_autocmds("User", { pattern = "CodaFilled", modeline = false })
end

-- Sends one request of the fill; the handler runs only while the fill is still wanted.
local function fill_request(job, method, params, handler)
  local ok, id = call(job.client, "request", method, params, function(err, result)
    if job.done then
      return -- cancelled: the answer (RequestCancelled, or a late result) is not wanted
    end
    if err then
      finish_fill(job, "Coda: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return
    end
    handler(result)
  end, job.bufnr)
  if not ok then
    finish_fill(job, "Coda: the server is not running", vim.log.levels.ERROR)
    return
  end
  job.request_id = id
end

--- Whether a hole fill is running.
function M.filling()
  return fill_job ~= nil
end

--- Stop the running fill (the server stops the model too). False when none ran.
function M.cancel()
  local job = fill_job
  if not job then
    vim.notify("Coda: no fill is running")
    return false
  end
  if job.request_id then
    call(job.client, "cancel_request", job.request_id)
  end
  finish_fill(job, "Coda: fill cancelled")
  return true
end

-- The server's $/progress for a fill: shown on the fill's line.
local function on_progress(args)
  local job = fill_job
  local value = args.data and args.data.params and args.data.params.value
  if not job or args.data.client_id ~= job.client.id or type(value) ~= "table"
      or value.title ~= FILL_PROGRESS_TITLE then
    return
  end
  if type(value.percentage) == "number" then
    job.percentage = value.percentage
  end
  if value.kind ~= "end" then
    show_fill_progress(job)
  end
end

--- Apply the server's "Fill this hole" code action at the cursor or over `range`
--- ({ start = {row, col}, ["end"] = {row, col} }, 1-based rows as in nvim_buf_get_mark).
--- Shows progress until it is done; M.cancel() (:CodaCancel) stops it.
---@param range table|nil
function M.fill(range)
  local bufnr = api.nvim_get_current_buf()
  local client = client_for(bufnr)
  if not client then
    vim.notify("Coda: no coda-lsp client in this buffer", vim.log.levels.WARN)
    return
  end
  if fill_job then
    vim.notify("Coda: a fill is already running; :CodaCancel stops it", vim.log.levels.WARN)
    return
  end
  local enc = client.offset_encoding or "utf-16"
  local params
  if range then
    params = vim.lsp.util.make_given_range_params(range.start, range["end"], bufnr, enc)
  else
    params = vim.lsp.util.make_range_params(0, enc)
  end
  params.context = { diagnostics = {}, only = { "quickfix", "refactor.rewrite" }, triggerKind = 1 }
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local job = { client = client, bufnr = bufnr, started = uv.now(), timer = uv.new_timer(),
                done = false }
  fill_job = job
  show_fill_progress(job)
  job.timer:start(1000, 1000, vim.schedule_wrap(function()
    if not job.done then
      show_fill_progress(job)
    end
  end))
  fill_request(job, "textDocument/codeAction", params, function(actions)
    local action
    for _, candidate in ipairs(actions or {}) do
      if candidate.title == FILL_TITLE then
        action = candidate
        break
      end
    end
    if not action then
      finish_fill(job, "Coda: no hole to fill here")
      return
    end
    -- The server may leave the edit to codeAction/resolve (computed only when chosen).
    if not action.edit and not action.command then
      fill_request(job, "codeAction/resolve", action, function(resolved)
        apply_action(job, tick, resolved or {})
      end)
      return
    end
    apply_action(job, tick, action)
  end)
end

--- One line about the server, for :CodaStatus.
function M.status_line()
  local client = client_for(0)
  if not client then
    return "Coda: not attached to this buffer"
  end
  local s = M.status
  local parts = { "Coda:" }
  if s then
    parts[#parts + 1] = s.state
    if s.message and s.message ~= "" then
      parts[#parts + 1] = "(" .. s.message .. ")"
    end
    if s.latencyMs ~= nil and s.latencyMs ~= vim.NIL then
      parts[#parts + 1] = ("last %d ms"):format(s.latencyMs)
    end
  else
    parts[#parts + 1] = "running, no status yet"
  end
  parts[#parts + 1] = M.enabled() and "· completions on" or "· completions off"
  return table.concat(parts, " ")
end

--- Turn ghost-text completions on or off (everywhere); the server hears it as `enabled`.
function M.toggle()
  vim.g.coda_enabled = not M.enabled()
  if builtin then
    vim.lsp.inline_completion.enable(vim.g.coda_enabled)
  end
  ghost.dismiss()
  for _, client in ipairs(vim.lsp.get_clients({ name = "coda" })) do
    client.settings = { coda = server_settings() }
    call(client, "notify", "workspace/didChangeConfiguration", { settings = client.settings })
  end
  vim.notify(M.status_line())
end

--- CodaGhostText: grey in true colour and in 16/256-colour terminals alike (linking to
--- Comment left it uncoloured where Comment only has a gui colour). `default`: a
--- colorscheme's or the user's own CodaGhostText wins.
local function define_highlight()
  api.nvim_set_hl(0, "CodaGhostText", { fg = "#808080", ctermfg = 8, italic = true,
    cterm = { italic = true }, default = true })
end

local function create_commands()
  api.nvim_create_user_command("CodaFill", function(cmd)
    if cmd.range > 0 then
      M.fill({ start = { cmd.line1, 0 }, ["end"] = { cmd.line2, #vim.fn.getline(cmd.line2) } })
    else
      M.fill()
    end
  end, { range = true, desc = "Coda: fill the hole at the cursor (or the selected lines)" })
  api.nvim_create_user_command("CodaCancel", function()
    M.cancel()
  end, { desc = "Coda: stop the running :CodaFill" })
  api.nvim_create_user_command("CodaStatus", function()
    vim.notify(M.status_line())
  end, { desc = "Coda: server state and last latency" })
  api.nvim_create_user_command("CodaToggle", M.toggle, { desc = "Coda: completions on/off" })
end

---@param opts coda.Options|table|nil
function M.setup(opts)
  M.options = config.resolve(opts)
  builtin = M.options.use_builtin and vim.lsp.inline_completion ~= nil
    and vim.lsp.inline_completion.enable ~= nil
  ghost.setup(M.options)
  define_highlight()
  create_commands()

  local group = api.nvim_create_augroup("coda", { clear = true })
  -- A colorscheme starts with `:highlight clear`, which takes CodaGhostText with it.
  api.nvim_create_autocmd("ColorScheme", { group = group, callback = define_highlight })
  missing_said = false
  api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.options.filetypes,
    callback = check_command,
  })
  api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == "coda" then
        on_attach(args.buf)
      end
    end,
  })
  api.nvim_create_autocmd("LspProgress", { group = group, callback = on_progress })
  -- A server that exits never answers: the fill would run forever and block the next one.
  api.nvim_create_autocmd("LspDetach", {
    group = group,
    callback = function(args)
      if fill_job and args.data.client_id == fill_job.client.id then
        finish_fill(fill_job, "Coda: the server stopped during the fill", vim.log.levels.ERROR)
      end
    end,
  })

  if vim.lsp.config and vim.lsp.enable then -- Neovim 0.11+
    vim.lsp.config("coda", M.lsp_config())
    vim.lsp.enable("coda")
  else -- Neovim 0.10
    api.nvim_create_autocmd("FileType", {
      group = group,
      pattern = M.options.filetypes,
      callback = function(args)
        if check_command() then
          return
        end
        local lsp_config = M.lsp_config()
        lsp_config.root_dir = vim.fs.root(args.buf, M.options.root_markers)
        vim.lsp.start(lsp_config, { bufnr = args.buf })
      end,
    })
  end
end

return M
