--- Ghost text for Neovim < 0.12: asks coda-lsp for `textDocument/inlineCompletion` while
--- typing (debounced, one request in flight per buffer, the older one cancelled), draws the
--- suggestion with an extmark (inline virtual text for its first line, virt_lines for the
--- rest), and accepts it whole, by word or by line. When the server offers several (a hole
--- asked for by hand: up to three, best first), next/prev cycle through them. Typing the
--- suggestion's own next characters keeps it (and drops the others); anything else drops it.
--- It does not start the server.
local api = vim.api
local uv = vim.uv or vim.loop
local config = require("coda.config")

local M = {}

local METHOD = "textDocument/inlineCompletion"
local TRIGGER_AUTOMATIC, TRIGGER_INVOKED = 2, 1

M.ns = api.nvim_create_namespace("coda.ghost")

---@class coda.Suggestion
---@field client_id integer
---@field row integer       0-based row of the cursor the ghost text starts at
---@field col integer       0-based byte column of that cursor
---@field text string       what is still to be inserted at (row, col)
---@field replace_len integer  bytes after (row, col) that accepting also replaces
---@field command table|nil

---@class coda.BufState
---@field timer uv.uv_timer_t|nil
---@field request {client_id: integer, id: integer}|nil
---@field suggestion coda.Suggestion|nil
---@field choices coda.Suggestion[]|nil  all the server offered here, as they came
---@field index integer|nil             which of them shows
---@field extmark integer|nil

---@type table<integer, coda.BufState>
local states = {}
local opts ---@type coda.Options

local function state(bufnr)
  states[bufnr] = states[bufnr] or {}
  return states[bufnr]
end

local function coda_client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr, name = "coda" })[1]
end

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local call = config.client_call

local function clear_extmark(bufnr, st)
  if st.extmark and api.nvim_buf_is_valid(bufnr) then
    pcall(api.nvim_buf_del_extmark, bufnr, M.ns, st.extmark)
  end
  st.extmark = nil
end

local function cancel_request(bufnr, st)
  local pending = st.request
  st.request = nil
  if pending then
    local client = vim.lsp.get_client_by_id(pending.client_id)
    if client then
      call(client, "cancel_request", pending.id)
    end
  end
end

--- Hide the suggestion and forget it; also stops a pending or in-flight request.
function M.dismiss(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = states[bufnr]
  if not st then
    return
  end
  if st.timer then
    st.timer:stop()
  end
  cancel_request(bufnr, st)
  clear_extmark(bufnr, st)
  st.suggestion = nil
  st.choices, st.index = nil, nil
end

local function render(bufnr, st)
  clear_extmark(bufnr, st)
  local s = st.suggestion
  if not s or s.text == "" then
    st.suggestion = nil
    return
  end
  local lines = vim.split(s.text, "\n", { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], opts.hl_group } }
  end
  st.extmark = api.nvim_buf_set_extmark(bufnr, M.ns, s.row, s.col, {
    virt_text = { { lines[1], opts.hl_group } },
    virt_text_pos = "inline",
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = "combine",
  })
end

--- Turns one InlineCompletionItem into what is left to show after the cursor, or nil when
--- the item does not continue what is typed before the cursor.
local function to_suggestion(bufnr, client, item, row, col)
  local text = type(item.insertText) == "table" and item.insertText.value or item.insertText
  if type(text) ~= "string" or text == "" then
    return nil
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1]
  local start_col, end_col = col, col
  if item.range then
    if item.range.start.line ~= row or item.range["end"].line ~= row then
      return nil -- the range must stay on the cursor's line (LSP 3.18)
    end
    local enc = client.offset_encoding or "utf-16"
    start_col = vim.lsp.util._get_line_byte_from_position(bufnr, item.range.start, enc)
    end_col = vim.lsp.util._get_line_byte_from_position(bufnr, item.range["end"], enc)
  end
  if start_col > col or end_col < col then
    return nil
  end
  local typed = line:sub(start_col + 1, col)
  if text:sub(1, #typed) ~= typed then
    return nil
  end
  return {
    client_id = client.id,
    row = row,
    col = col,
    text = text:sub(#typed + 1),
    replace_len = end_col - col,
    command = item.command,
  }
end

local function on_result(bufnr, st, client, row, col, tick, err, result)
  if err or not result or not api.nvim_buf_is_valid(bufnr) then
    return
  end
  -- Stale: the user typed or moved on while the model was thinking.
  if api.nvim_get_current_buf() ~= bufnr or api.nvim_buf_get_changedtick(bufnr) ~= tick then
    return
  end
  local crow, ccol = cursor()
  if crow ~= row or ccol ~= col or not vim.startswith(api.nvim_get_mode().mode, "i") then
    return
  end
  local choices = {}
  for _, item in ipairs(result.items or result) do
    local suggestion = to_suggestion(bufnr, client, item, row, col)
    if suggestion then
      choices[#choices + 1] = suggestion
    end
  end
  if #choices > 0 then
    st.choices, st.index = choices, 1
    st.suggestion = vim.deepcopy(choices[1])
    render(bufnr, st)
  end
end

-- Show the suggestion `step` places further (wrapping); false when there is nothing to cycle.
local function cycle(step)
  local bufnr = api.nvim_get_current_buf()
  local st = states[bufnr]
  if not st or not st.suggestion or not st.choices or #st.choices < 2 then
    return false
  end
  st.index = (st.index - 1 + step) % #st.choices + 1
  st.suggestion = vim.deepcopy(st.choices[st.index])
  render(bufnr, st)
  return true
end

--- Show the next of the server's suggestions. Returns false when fewer than two showed.
function M.next()
  return cycle(1)
end

--- Show the previous one. Returns false when fewer than two showed.
function M.prev()
  return cycle(-1)
end

--- Which suggestion shows and how many there are: index, count (nil when none shows).
function M.position()
  local st = states[api.nvim_get_current_buf()]
  if not st or not st.suggestion or not st.choices then
    return nil
  end
  return st.index, #st.choices
end

--- Ask the server now (the debounce is the caller's business).
---@param trigger_kind integer|nil 1 invoked, 2 automatic
function M.request(bufnr, trigger_kind)
  bufnr = bufnr or api.nvim_get_current_buf()
  local client = coda_client(bufnr)
  if not client then
    return
  end
  local st = state(bufnr)
  cancel_request(bufnr, st)
  local row, col = cursor()
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding or "utf-16")
  params.context = { triggerKind = trigger_kind or TRIGGER_AUTOMATIC }
  local ok, id
  ok, id = call(client, "request", METHOD, params, function(err, result)
    if st.request and st.request.id == id then
      st.request = nil
    end
    on_result(bufnr, st, client, row, col, tick, err, result)
  end, bufnr)
  if ok and id then
    st.request = { client_id = client.id, id = id }
  end
end

--- Ask for a suggestion now, as an explicit invocation.
function M.trigger()
  M.dismiss()
  M.request(api.nvim_get_current_buf(), TRIGGER_INVOKED)
end

local function schedule_request(bufnr, st)
  st.timer = st.timer or uv.new_timer()
  st.timer:stop()
  st.timer:start(opts.debounce_ms, 0, vim.schedule_wrap(function()
    if api.nvim_buf_is_valid(bufnr) and api.nvim_get_current_buf() == bufnr
        and vim.startswith(api.nvim_get_mode().mode, "i") then
      M.request(bufnr, TRIGGER_AUTOMATIC)
    end
  end))
end

--- After the cursor moved or the text changed in insert mode: keep the suggestion if the user
--- typed exactly its next characters, otherwise drop it and ask again after the debounce.
local function on_insert_activity(bufnr)
  local st = state(bufnr)
  local s = st.suggestion
  local row, col = cursor()
  if s then
    if row == s.row and col == s.col then
      return -- nothing moved (e.g. CursorMovedI right after rendering)
    end
    if row > s.row or (row == s.row and col > s.col) then
      local typed = table.concat(api.nvim_buf_get_text(bufnr, s.row, s.col, row, col, {}), "\n")
      if s.text:sub(1, #typed) == typed then
        s.text = s.text:sub(#typed + 1)
        s.row, s.col = row, col
        st.choices, st.index = nil, nil -- the others no longer start here
        render(bufnr, st)
        if st.suggestion then
          return
        end
      end
    end
  end
  M.dismiss(bufnr)
  if opts.auto_trigger and vim.b[bufnr].coda_enabled ~= false and config.enabled(opts) then
    schedule_request(bufnr, st)
  end
end

--- Whether a suggestion is showing in the current buffer.
function M.visible()
  local st = states[api.nvim_get_current_buf()]
  return st ~= nil and st.suggestion ~= nil
end

--- The suggestion text still to be inserted, or nil (for statuslines and tests).
function M.current_text()
  local st = states[api.nvim_get_current_buf()]
  return st and st.suggestion and st.suggestion.text or nil
end

-- Inserts `piece` (a prefix of the suggestion) at the suggestion's anchor and moves the cursor
-- after it. The rest of the suggestion follows through on_insert_activity.
local function insert_piece(bufnr, s, piece, replace_to)
  local lines = vim.split(piece, "\n", { plain = true })
  api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, replace_to or s.col, lines)
  local end_row = s.row + #lines - 1
  local end_col = (#lines == 1 and s.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { end_row + 1, end_col })
end

--- Accept the whole suggestion. Returns false when there was none.
function M.accept()
  local bufnr = api.nvim_get_current_buf()
  local st = states[bufnr]
  local s = st and st.suggestion
  if not s then
    return false
  end
  M.dismiss(bufnr)
  local line = api.nvim_buf_get_lines(bufnr, s.row, s.row + 1, true)[1]
  insert_piece(bufnr, s, s.text, math.min(s.col + s.replace_len, #line))
  if s.command then
    local client = vim.lsp.get_client_by_id(s.client_id)
    if client then
      call(client, "request", "workspace/executeCommand", s.command, function() end, bufnr)
    end
  end
  return true
end

local function accept_prefix(pattern_fn)
  local bufnr = api.nvim_get_current_buf()
  local st = states[bufnr]
  local s = st and st.suggestion
  if not s then
    return false
  end
  local piece = pattern_fn(s.text)
  if not piece or piece == "" or piece == s.text then
    return M.accept()
  end
  -- Keep the suggestion: on_insert_activity sees the inserted text as "typed through".
  insert_piece(bufnr, s, piece)
  return true
end

--- Accept the next word (with the whitespace before it). Returns false when nothing showed.
function M.accept_word()
  return accept_prefix(function(text)
    return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text:match("^%s+")
  end)
end

--- Accept up to the end of the suggestion's current line (a leading line break included).
function M.accept_line()
  return accept_prefix(function(text)
    return text:match("^\n?[^\n]*")
  end)
end

--- Wire the autocommands for one buffer (called on LspAttach of the coda client).
function M.attach(bufnr)
  local group = api.nvim_create_augroup("coda.ghost." .. bufnr, { clear = true })
  api.nvim_create_autocmd({ "TextChangedI", "CursorMovedI" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_insert_activity(bufnr)
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.dismiss(bufnr)
    end,
  })
  api.nvim_create_autocmd({ "BufUnload", "LspDetach" }, {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.event == "LspDetach" then
        local client = vim.lsp.get_client_by_id(args.data.client_id)
        if not client or client.name ~= "coda" then
          return
        end
      end
      M.dismiss(bufnr)
      local st = states[bufnr]
      if st and st.timer then
        st.timer:close()
      end
      states[bufnr] = nil
      pcall(api.nvim_del_augroup_by_id, group)
    end,
  })
end

---@param options coda.Options
function M.setup(options)
  opts = options
end

return M
