--- Coda for Neovim: registers coda-lsp, shows its ghost-text suggestions, and adds
--- :CodaFill (the server's "Fill this hole" code action) with :CodaCancel, :CodaStatus,
--- :CodaToggle and :checkhealth coda.
---
---   require("coda").setup({ model = "/path/to/checkpoint", settings = { steps = 8 } })
---
--- On Neovim >= 0.12 the built-in vim.lsp.inline_completion draws the suggestions; before
--- that coda.ghost does. Completion logic lives in the server, not here. What the plugin and
--- the server say reaches the user as one line starting with `coda-lsp:`; the server's
--- questions (window/showMessageRequest, e.g. "Fill anyway (…)" for a refused hole) are
--- answered through vim.ui.select.
local api = vim.api
local config = require("coda.config")
local fill = require("coda.fill")
local ghost = require("coda.ghost")
local start = require("coda.start")

local M = {}

---@type coda.Options
M.options = config.resolve(nil)
--- Last `coda/status` notification: { state = "loading"|"ready"|"error", message, latencyMs }.
M.status = nil
local builtin = false

local function client_for(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = "coda" })[1]
end

local call = config.client_call

local LEVELS = { vim.log.levels.ERROR, vim.log.levels.WARN, vim.log.levels.INFO,
                 vim.log.levels.DEBUG }

-- window/showMessage: one line, the one prefix (Neovim's own adds "LSP[coda][Warning]").
local function on_show_message(_, params)
  config.say(params.message or "", LEVELS[params.type] or vim.log.levels.INFO)
  return vim.NIL
end

-- window/showMessageRequest: the question through vim.ui.select, the chosen action (or
-- nothing) as the answer. Neovim runs server requests in a coroutine, so this can wait for
-- the user; where it cannot, the message is said and nothing is chosen.
local function on_message_request(_, params)
  local message = config.one_line(params.message or "")
  local actions = params.actions or {}
  local co, is_main = coroutine.running()
  if #actions == 0 or not co or is_main then
    vim.notify(message, LEVELS[params.type] or vim.log.levels.INFO)
    return vim.NIL
  end
  fill.asking(true)
  api.nvim_echo({}, false, {}) -- the fill's progress line gives way to the question
  vim.ui.select(actions, {
    prompt = message,
    kind = "coda-lsp",
    format_item = function(action)
      return (action.title:gsub("%s+", " "))
    end,
  }, function(choice)
    vim.schedule(function() -- resume after the yield below, also for a synchronous select
      fill.asking(false)
      coroutine.resume(co, choice or vim.NIL)
    end)
  end)
  return coroutine.yield()
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
--- True when the server command cannot run. vim.lsp only logs that; say it once, with the fix.
local function command_missing()
  local exe = config.command(M.options)[1]
  if vim.fn.executable(exe) == 1 then
    return false
  end
  if not missing_said then
    missing_said = true
    config.say(("cannot start the server: %s is not executable; install it (pip install -e "
      .. "/path/to/coda-lsp) or set cmd = { '/path/to/coda-lsp' } in require('coda').setup() "
      .. "(see :checkhealth coda)"):format(exe), vim.log.levels.WARN)
  end
  return true
end

-- A server that did not start: one line (coda.start), and :CodaStatus / :checkhealth say it.
-- A warning, like the missing command's: an error-level message aborts whatever Ex command or
-- expression happens to be running when it arrives.
local function on_start_failure(message)
  config.say(message, vim.log.levels.WARN)
  on_status(nil, { state = "error", message = message, latencyMs = vim.NIL })
end

--- The vim.lsp configuration for coda-lsp (what setup() registers).
function M.lsp_config()
  local opts = M.options
  local argv = config.command(opts)
  -- Tells coda-lsp to name the setup() option, not its --model flag, for a wrong model folder.
  local env = { CODA_LSP_MODEL_SETTING = "model in require('coda').setup()" }
  local cmd = argv -- a command that cannot run is said on FileType (command_missing)
  if vim.fn.executable(argv[1]) == 1 then
    cmd = start.cmd(argv, env, on_start_failure)
  end
  return {
    name = "coda",
    cmd = cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = server_settings(),
    settings = { coda = server_settings() },
    cmd_env = env,
    handlers = {
      ["coda/status"] = on_status,
      ["window/showMessage"] = on_show_message,
      ["window/showMessageRequest"] = on_message_request,
    },
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
    map_key(bufnr, keys.next, "next", "Coda: next suggestion")
    map_key(bufnr, keys.prev, "prev", "Coda: previous suggestion")
    if keys.suggest then
      vim.keymap.set("i", keys.suggest, M.suggest, { buffer = bufnr, desc = "Coda: suggest now" })
    end
  elseif vim.lsp.inline_completion.select then -- Neovim 0.12: its own cycling
    for lhs, count in pairs({ [keys.next or ""] = 1, [keys.prev or ""] = -1 }) do
      if lhs ~= "" then
        vim.keymap.set("i", lhs, function()
          vim.lsp.inline_completion.select({ count = count })
        end, { buffer = bufnr, desc = "Coda: next/previous suggestion" })
      end
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
    config.say("completions are off; :CodaToggle turns them on", vim.log.levels.WARN)
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
--- Show the next / previous of the server's suggestions; false when fewer than two showed.
M.next = ghost.next
M.prev = ghost.prev
--- Fill the hole at the cursor or over `range` (see coda.fill); M.cancel() stops it.
M.fill = fill.fill
M.cancel = fill.cancel
M.filling = fill.running

--- One line about the server, for :CodaStatus.
function M.status_line()
  local client = client_for(0)
  if not client then
    return "coda-lsp: not attached to this buffer"
  end
  local s = M.status
  local parts = { "coda-lsp:" }
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
    local range
    if cmd.range > 0 then
      range = { start = { cmd.line1, 0 }, ["end"] = { cmd.line2, #vim.fn.getline(cmd.line2) } }
    end
    M.fill(range, cmd.bang)
  end, { range = true, bang = true,
         desc = "Coda: fill the hole at the cursor (or the selected lines); ! even with a fill "
           .. "the server rejected" })
  api.nvim_create_user_command("CodaCancel", function()
    M.cancel()
  end, { desc = "Coda: stop the running :CodaFill" })
  api.nvim_create_user_command("CodaStatus", function()
    vim.notify(M.status_line())
  end, { desc = "Coda: server state and last latency" })
  api.nvim_create_user_command("CodaToggle", M.toggle, { desc = "Coda: completions on/off" })
end

local LOAD_PROGRESS = "coda-lsp: loading" -- the server's $/progress titles while a model loads
local load_titles = {} -- progress token -> whether it is a model load
-- While a model loads (a Hub id downloads first: "downloading owner/name: 42 % (12.3 / 29.1
-- MB)"), the server's progress goes on the message line (no history); it clears at the end.
-- Not over a running fill's line.
local function on_load_progress(args)
  local value = args.data and args.data.params and args.data.params.value
  local client = vim.lsp.get_client_by_id(args.data and args.data.client_id or -1)
  if not client or client.name ~= "coda" or type(value) ~= "table" or fill.running() then
    return
  end
  local title = value.title or ""
  if value.kind == "begin" then
    load_titles[args.data.params.token] = vim.startswith(title, LOAD_PROGRESS)
  end
  if not load_titles[args.data.params.token] then
    return
  end
  if value.kind == "end" then
    load_titles[args.data.params.token] = nil
    api.nvim_echo({}, false, {})
  elseif type(value.message) == "string" then
    api.nvim_echo({ { "coda-lsp: " .. value.message } }, false, {})
  end
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
    callback = command_missing,
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
  api.nvim_create_autocmd("LspProgress", { group = group, callback = fill.on_progress })
  api.nvim_create_autocmd("LspProgress", { group = group, callback = on_load_progress })
  api.nvim_create_autocmd("LspDetach", { group = group, callback = fill.on_detach })

  if vim.lsp.config and vim.lsp.enable then -- Neovim 0.11+
    vim.lsp.config("coda", M.lsp_config())
    vim.lsp.enable("coda")
  else -- Neovim 0.10
    api.nvim_create_autocmd("FileType", {
      group = group,
      pattern = M.options.filetypes,
      callback = function(args)
        if command_missing() then
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
