-- Test init for headless Neovim: loads editors/neovim from $CODA_PLUGIN_DIR, starts the
-- server from $CODA_SERVER_CMD (a JSON list) and defines CodaTest, the calls
-- tests/editors/nvim_driver.py makes over --remote-expr. Each call waits on Neovim's event
-- loop (vim.wait) for a condition, never a fixed sleep.
vim.opt.runtimepath:prepend(vim.env.CODA_PLUGIN_DIR)
vim.opt.swapfile = false
vim.opt.shadafile = "NONE"

if vim.env.CODA_LSP_DEBUG then
  vim.lsp.log.set_level("debug")
end
local coda = require("coda")
coda.setup({
  cmd = vim.json.decode(vim.env.CODA_SERVER_CMD),
  debounce_ms = 30,
  settings = vim.json.decode(vim.env.CODA_SETTINGS or "{}"),
})

local ghost = require("coda.ghost")
local events = {}
vim.api.nvim_create_autocmd("User", {
  pattern = { "CodaFilled", "CodaStatus" },
  callback = function(args)
    events[#events + 1] = args.match
  end,
})

CodaTest = {}

function CodaTest.run(encoded)
  local call = vim.json.decode(vim.base64.decode(encoded))
  local ok, result = pcall(CodaTest[call.fn], unpack(call.args or {}))
  return vim.json.encode({ ok = ok, result = ok and result or tostring(result) })
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
