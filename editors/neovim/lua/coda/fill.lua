--- :CodaFill: runs the server's "Fill this hole" code action (resolving it when the server
--- leaves the edit to codeAction/resolve) and applies it. One fill at a time; while it runs the
--- message line shows the server's `$/progress` and the time taken, Esc (in normal mode, in
--- the fill's buffer) or :CodaCancel stops it ($/cancelRequest: the server stops the model,
--- the buffer stays as it was), and the line clears when it is done. A hole
--- the server refuses (every candidate adds a syntax error) is left as it was: the server asks
--- through `window/showMessageRequest` (init.lua answers it with vim.ui.select), and only its
--- "Fill anyway (…)" fills. :CodaFill! asks for that directly: the `coda.fillHole` command
--- with `acceptRejected`.
local api = vim.api
local uv = vim.uv or vim.loop

local M = {}

local FILL_TITLE = "Fill this hole"
local FILL_HOLE_COMMAND = "coda.fillHole" -- the server's command (ARCHITECTURE.md)
M.PROGRESS_TITLE = "coda-lsp: filling the hole" -- the server's $/progress title
local call = require("coda.config").client_call

--- The hole fill in flight (at most one): the request it waits on, the server's progress.
---@class coda.FillJob
---@field client vim.lsp.Client
---@field bufnr integer
---@field request_id integer|nil
---@field started number          uv.now() when it started
---@field timer uv.uv_timer_t
---@field percentage integer|nil  from the server's $/progress
---@field row integer              the hole's first line (0-based), where the sharpening shows
---@field mark integer|nil        the sharpening's extmark
---@field done boolean
---@type coda.FillJob|nil
local fill_job = nil

-- The fill's line on the message line: no history, redrawn each second and on progress;
-- not while the server asks the user something (it would cover the question).
local function show_fill_progress(job)
  if job.asking then
    return
  end
  local seconds = math.floor((uv.now() - job.started) / 1000)
  local done = job.percentage and (" %d%%,"):format(job.percentage) or ""
  api.nvim_echo({ { ("coda-lsp: filling the hole…%s %d s (Esc or :CodaCancel stops it)")
    :format(done, seconds) } }, false, {})
end

-- Esc stops the fill while it runs: a normal-mode mapping in the fill's buffer, for the fill's
-- time only; a buffer mapping of Esc the user had comes back after.
local function map_escape(job)
  job.saved_escape = vim.fn.maparg("<Esc>", "n", false, true)
  vim.keymap.set("n", "<Esc>", function()
    M.cancel()
  end, { buffer = job.bufnr, nowait = true, desc = "Coda: stop the running fill" })
end

local function unmap_escape(job)
  if not api.nvim_buf_is_valid(job.bufnr) then
    return
  end
  pcall(vim.keymap.del, "n", "<Esc>", { buffer = job.bufnr })
  local saved = job.saved_escape
  if type(saved) == "table" and saved.buffer == 1 then
    api.nvim_buf_call(job.bufnr, function()
      vim.fn.mapset("n", false, saved)
    end)
  end
end

M.ns = api.nvim_create_namespace("coda-fill") -- the fill sharpening at the hole

-- The server's progress message "step 5/12: return x + ░░" drawn after the hole's line, so the
-- fill is seen sharpening in place; the buffer itself is not touched until it is done.
local function show_sharpening(job, message)
  local preview = type(message) == "string" and message:match("^step %d+/%d+: (.+)$")
  if not preview or not api.nvim_buf_is_valid(job.bufnr) then
    return
  end
  local row = math.min(job.row, api.nvim_buf_line_count(job.bufnr) - 1)
  job.mark = api.nvim_buf_set_extmark(job.bufnr, M.ns, row, 0, {
    id = job.mark, virt_text = { { "  " .. preview, "CodaGhostText" } }, virt_text_pos = "eol",
  })
end

-- Ends the fill: the progress line goes, `message` (if any) is said instead.
local function finish_fill(job, message, level)
  if job.done then
    return
  end
  job.done = true
  if api.nvim_buf_is_valid(job.bufnr) then
    api.nvim_buf_clear_namespace(job.bufnr, M.ns, 0, -1)
  end
  job.timer:stop()
  job.timer:close()
  unmap_escape(job)
  if fill_job == job then
    fill_job = nil
  end
  api.nvim_echo({}, false, {})
  if message then
    vim.notify(require("coda.config").one_line(message), level or vim.log.levels.INFO)
  end
end

local function apply_action(job, tick, action)
  local client, bufnr = job.client, job.bufnr
  if not action.edit and not action.command then
    finish_fill(job) -- the server says why in a window/showMessage (nothing over the bar)
    return
  end
  if api.nvim_buf_get_changedtick(bufnr) ~= tick then
    finish_fill(job, "coda-lsp: the buffer changed while filling; try again", vim.log.levels.WARN)
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
      finish_fill(job, "coda-lsp: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return
    end
    handler(result)
  end, job.bufnr)
  if not ok then
    finish_fill(job, "coda-lsp: the server is not running", vim.log.levels.ERROR)
    return
  end
  job.request_id = id
end

--- The server asks the user something (window/showMessageRequest): stop drawing the running
--- fill's progress over the question until the answer is given.
function M.asking(yes)
  if fill_job then
    fill_job.asking = yes
  end
end

--- Whether a hole fill is running.
function M.running()
  return fill_job ~= nil
end

--- Stop the running fill (the server stops the model too). False when none ran.
function M.cancel()
  local job = fill_job
  if not job then
    vim.notify("coda-lsp: no fill is running")
    return false
  end
  if job.request_id then
    call(job.client, "cancel_request", job.request_id)
  end
  finish_fill(job, "coda-lsp: fill cancelled")
  return true
end

--- LspProgress: the server's progress for the running fill goes on its line.
function M.on_progress(args)
  local job = fill_job
  local value = args.data and args.data.params and args.data.params.value
  if not job or args.data.client_id ~= job.client.id or type(value) ~= "table"
      or value.title ~= M.PROGRESS_TITLE then
    return
  end
  if type(value.percentage) == "number" then
    job.percentage = value.percentage
  end
  if value.kind ~= "end" then
    show_fill_progress(job)
    show_sharpening(job, value.message)
  end
end

--- Apply the server's "Fill this hole" code action at the cursor or over `range`
--- ({ start = {row, col}, ["end"] = {row, col} }, 1-based rows as in nvim_buf_get_mark).
--- Shows progress until it is done; M.cancel() (:CodaCancel) stops it.
---@param range table|nil
---@param accept_rejected boolean|nil  true: fill even with a candidate the server rejected
function M.fill(range, accept_rejected)
  local bufnr = api.nvim_get_current_buf()
  local client = vim.lsp.get_clients({ bufnr = bufnr, name = "coda" })[1]
  if not client then
    vim.notify("coda-lsp: not attached to this buffer (see :checkhealth coda)", vim.log.levels.WARN)
    return
  end
  if fill_job then
    vim.notify("coda-lsp: a fill is already running; Esc or :CodaCancel stops it",
      vim.log.levels.WARN)
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
                done = false, row = params.range.start.line }
  fill_job = job
  map_escape(job)
  show_fill_progress(job)
  job.timer:start(1000, 1000, vim.schedule_wrap(function()
    if not job.done then
      show_fill_progress(job)
    end
  end))
  if accept_rejected then
    local target = { uri = params.textDocument.uri, range = params.range, acceptRejected = true }
    fill_request(job, "workspace/executeCommand",
      { command = FILL_HOLE_COMMAND, arguments = { target } }, function()
        -- The server applied its edit (workspace/applyEdit) before it answered, or said why not.
        local filled = api.nvim_buf_get_changedtick(bufnr) ~= tick
        finish_fill(job)
        if filled then
          api.nvim_exec_autocmds("User", { pattern = "CodaFilled", modeline = false })
        end
      end)
    return
  end
  fill_request(job, "textDocument/codeAction", params, function(actions)
    local action
    for _, candidate in ipairs(actions or {}) do
      if candidate.title == FILL_TITLE then
        action = candidate
        break
      end
    end
    if not action then
      finish_fill(job, "coda-lsp: no hole to fill here")
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

--- LspDetach: a server that exits never answers, so its fill ends here.
function M.on_detach(args)
  if fill_job and args.data.client_id == fill_job.client.id then
    finish_fill(fill_job, "coda-lsp: the server stopped during the fill", vim.log.levels.ERROR)
  end
end

return M
