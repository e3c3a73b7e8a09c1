--- Coda plugin options: defaults and merging. No side effects.
local M = {}

---@class coda.Keymaps
---@field accept string|false       accept the whole suggestion
---@field accept_word string|false  accept the next word of it
---@field accept_line string|false  accept up to the end of its current line
---@field dismiss string|false      hide it
---@field next string|false         show the next of several suggestions
---@field prev string|false         show the previous one
---@field suggest string|false      ask for a suggestion now (also with auto_trigger off)

---@class coda.Options
---@field cmd string[]|nil          server command line; default { "coda-lsp" } (+ --model/--device)
---@field model string|nil          checkpoint directory, passed as --model
---@field device string|nil         "auto" | "cpu" | "cuda" | "mps", passed as --device
---@field filetypes string[]        filetypes the server attaches to
---@field root_markers string[]     files that mark a project root
---@field settings table            server settings, camelCase (steps, alg, contextTokens, ...)
---@field auto_trigger boolean      request suggestions while typing in insert mode
---@field debounce_ms integer       quiet time after a keystroke before asking the server
---@field keymaps coda.Keymaps      insert-mode keys; false disables one
---@field use_builtin boolean       on Neovim >= 0.12 use vim.lsp.inline_completion instead
---@field hl_group string           highlight group of the ghost text
M.defaults = {
  cmd = nil,
  model = nil,
  device = nil,
  filetypes = {
    "python", "javascript", "javascriptreact", "typescript", "typescriptreact",
    "rust", "go", "c", "cpp", "java", "lua",
  },
  root_markers = { "pyproject.toml", "package.json", "Cargo.toml", "go.mod", ".git" },
  settings = {},
  auto_trigger = true,
  debounce_ms = 75,
  -- Tab is left alone on purpose: completion and snippet plugins usually own it. Map it
  -- yourself with require("coda").accept() if you want it (see README).
  keymaps = {
    accept = "<M-l>",
    accept_word = "<M-Right>",
    accept_line = "<M-Down>",
    dismiss = "<C-]>",
    next = "<M-]>",
    prev = "<M-[>",
    suggest = "<M-\\>",
  },
  use_builtin = true,
  hl_group = "CodaGhostText",
}

--- Defaults overridden by `opts` (lists are replaced, tables merged).
---@param opts table|nil
---@return coda.Options
function M.resolve(opts)
  return vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts or {})
end

--- Whether completions are on: :CodaToggle's choice (vim.g.coda_enabled) if it made one,
--- else `settings.enabled` (on unless set to false).
---@param opts coda.Options
---@return boolean
function M.enabled(opts)
  if vim.g.coda_enabled ~= nil then
    return vim.g.coda_enabled ~= false
  end
  return opts.settings.enabled ~= false
end

--- The server command line for these options.
---@param opts coda.Options
---@return string[]
function M.command(opts)
  local cmd = vim.deepcopy(opts.cmd or { "coda-lsp" })
  if opts.model then
    vim.list_extend(cmd, { "--model", opts.model })
  end
  if opts.device then
    vim.list_extend(cmd, { "--device", opts.device })
  end
  return cmd
end

--- `text` as the plugin says things: one line, starting with the one prefix `coda-lsp:`
--- (whatever prefix the text had).
---@param text string
---@return string
function M.one_line(text)
  local flat = vim.trim((text:gsub("%s+", " ")))
  flat = flat:gsub("^[Cc]oda%-lsp%s*:%s*", ""):gsub("^[Cc]oda%s*:%s*", "")
  return "coda-lsp: " .. flat
end

--- vim.notify `text` as one line with the prefix.
function M.say(text, level)
  vim.notify(M.one_line(text), level or vim.log.levels.INFO)
end

-- Client methods are called with ':' from 0.11 on; 0.10 only has the '.' form.
local HAS_011 = vim.fn.has("nvim-0.11") == 1

--- client:method(...) on 0.11+, client.method(...) on 0.10.
function M.client_call(client, method, ...)
  if HAS_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end

return M
