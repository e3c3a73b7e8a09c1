-- Test init for headless Neovim: loads editors/neovim from $CODA_PLUGIN_DIR, starts the
-- server from $CODA_SERVER_CMD (a JSON list) with more setup() options from $CODA_SETUP (a
-- JSON object) and defines CodaTest, the calls tests/editors/nvim_driver.py makes over
-- --remote-expr. Each call waits on Neovim's event loop (vim.wait) for a condition, never a
-- fixed sleep. Everything shown on the message line (nvim_echo, which vim.notify uses too) is
-- recorded in `echoes`, since a headless Neovim has no screen to read it from.
vim.opt.runtimepath:prepend(vim.env.CODA_PLUGIN_DIR)
vim.opt.swapfile = false
vim.opt.shadafile = "NONE"

if vim.env.CODA_LSP_DEBUG then
  vim.lsp.log.set_level("debug")
end
local echoes = {}
local echo = vim.api.nvim_echo
vim.api.nvim_echo = function(chunks, history, opts)
  local text = {}
  for _, chunk in ipairs(chunks) do
    text[#text + 1] = chunk[1]
  end
  echoes[#echoes + 1] = { text = table.concat(text), history = history }
  return echo(chunks, history, opts)
end

-- vim.ui.select answers from the test: the item whose text starts with `choice` (none when
-- nil); each question is recorded in `selects` as { prompt, items }.
local selects, choice = {}, nil
vim.ui.select = function(items, opts, on_choice)
  local titles, pick = {}, nil
  for i, item in ipairs(items) do
    titles[i] = opts.format_item and opts.format_item(item) or tostring(item)
    if choice and not pick and vim.startswith(titles[i], choice) then
      pick = item
    end
  end
  selects[#selects + 1] = { prompt = opts.prompt, items = titles }
  on_choice(pick, pick and 1 or nil)
end

local coda = require("coda")
coda.setup(vim.tbl_deep_extend("force", {
  cmd = vim.json.decode(vim.env.CODA_SERVER_CMD),
  debounce_ms = 30,
  settings = vim.json.decode(vim.env.CODA_SETTINGS or "{}"),
}, vim.json.decode(vim.env.CODA_SETUP or "{}")))

local ghost = require("coda.ghost")
local events = {}
vim.api.nvim_create_autocmd("User", {
  pattern = { "CodaFilled", "CodaStatus" },
  callback = function(args)
    events[#events + 1] = args.match
  end,
})
local progress = {}
vim.api.nvim_create_autocmd("LspProgress", {
  callback = function(args)
    local value = args.data.params.value
    progress[#progress + 1] = { kind = value.kind, title = value.title,
                                percentage = value.percentage, message = value.message }
  end,
})

CodaTest = {}

--- Answer later vim.ui.select questions with the item starting with `prefix` ("" for none).
function CodaTest.choose(prefix)
  choice = prefix ~= "" and prefix or nil
end

--- Wait for a vim.ui.select question; returns { prompt, items } of the first one.
function CodaTest.wait_select(timeout)
  vim.wait(timeout, function()
    return #selects > 0
  end, 20)
  return selects[1] or vim.NIL
end

function CodaTest.selects()
  return selects
end

--- Wait until the ghost text shows exactly `text`; returns what shows (vim.NIL for nothing).
function CodaTest.wait_ghost_text(text, timeout)
  vim.wait(timeout, function()
    return ghost.current_text() == text
  end, 10)
  return ghost.current_text() or vim.NIL
end

function CodaTest.run(encoded)
  local call = vim.json.decode(vim.base64.decode(encoded))
  local ok, result = pcall(CodaTest[call.fn], unpack(call.args or {}))
  if not ok then
    result = tostring(result) -- the error; a false result stays false (not "false")
  end
  return vim.json.encode({ ok = ok, result = result })
end

function CodaTest.wait_attached(timeout)
  return vim.wait(timeout, function()
    return #vim.lsp.get_clients({ bufnr = 0, name = "coda" }) > 0
  end, 20)
end

function CodaTest.wait_status(state, timeout)
  return vim.wait(timeout, function()
    return coda.status ~= nil and coda.status.state == state
  end, 20)
end

local function marks()
  return vim.api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, { details = true })
end

--- Wait for a ghost-text extmark; returns what it shows: first line and further lines.
function CodaTest.wait_ghost(timeout)
  local shown = vim.wait(timeout, function()
    return #marks() > 0
  end, 10)
  if not shown then
    return vim.NIL
  end
  local mark = marks()[1]
  local details = mark[4]
  local lines = { details.virt_text[1][1] }
  for _, virt_line in ipairs(details.virt_lines or {}) do
    lines[#lines + 1] = virt_line[1][1]
  end
  return {
    row = mark[2],
    col = mark[3],
    virt_text_pos = details.virt_text_pos,
    text = table.concat(lines, "\n"),
    suggestion = ghost.current_text(),
  }
end

--- Wait until the fill's sharpening (virtual text at the hole) contains `needle`; returns its
--- row and text, or vim.NIL.
function CodaTest.wait_sharpening(needle, timeout)
  local ns = require("coda.fill").ns
  local function found()
    for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
      local text = mark[4].virt_text[1][1]
      if text:find(needle, 1, true) then
        return { row = mark[2], text = text }
      end
    end
  end
  vim.wait(timeout, function()
    return found() ~= nil
  end, 10)
  return found() or vim.NIL
end

function CodaTest.sharpening_marks()
  return #vim.api.nvim_buf_get_extmarks(0, require("coda.fill").ns, 0, -1, {})
end

function CodaTest.wait_no_ghost(timeout)
  return vim.wait(timeout, function()
    return #marks() == 0
  end, 10)
end

function CodaTest.wait_lines_change(before, timeout)
  local function joined()
    return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, true), "\n")
  end
  vim.wait(timeout, function()
    return joined() ~= before
  end, 20)
  return joined()
end

function CodaTest.wait_event(name, timeout)
  return vim.wait(timeout, function()
    return vim.tbl_contains(events, name)
  end, 20)
end

function CodaTest.state()
  local cursor = vim.api.nvim_win_get_cursor(0)
  return {
    lines = vim.api.nvim_buf_get_lines(0, 0, -1, true),
    text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, true), "\n"),
    mode = vim.api.nvim_get_mode().mode,
    cursor = cursor,
    status_line = coda.status_line(),
    messages = vim.fn.execute("messages"),
  }
end

--- What the message line showed, oldest first: { text, history }.
function CodaTest.echoes()
  return echoes
end

--- Wait until the message line has shown text containing `needle` (plain); returns it.
function CodaTest.wait_echo(needle, timeout)
  local found = vim.NIL
  vim.wait(timeout, function()
    for _, entry in ipairs(echoes) do
      if entry.text:find(needle, 1, true) then
        found = entry.text
        return true
      end
    end
    return false
  end, 20)
  return found
end

--- $/progress values the client saw: { kind, title, percentage, message }.
function CodaTest.progress()
  return progress
end

--- Wait for a $/progress value of `kind` ("begin" | "report" | "end") with `title`.
function CodaTest.wait_progress(kind, title, timeout)
  return vim.wait(timeout, function()
    for _, value in ipairs(progress) do
      if value.kind == kind and value.title == title then
        return true
      end
    end
    return false
  end, 20)
end

function CodaTest.wait_no_fill(timeout)
  return vim.wait(timeout, function()
    return not coda.filling()
  end, 20)
end

--- The report of `:checkhealth coda`, as lines; closes it again.
function CodaTest.checkhealth()
  vim.cmd("checkhealth coda")
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, true)
  vim.cmd("bwipe")
  return lines
end

--- The ghost-text highlight group as nvim_get_hl gives it (link not followed).
function CodaTest.highlight(name)
  return vim.api.nvim_get_hl(0, { name = name, link = false })
end

--- Run an Ex command; returns what it printed.
function CodaTest.ex(command)
  return vim.fn.execute(command)
end
