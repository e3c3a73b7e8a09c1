; Rust spans.

[
  (expression_statement)
  (let_declaration)
  (use_declaration)
] @statement.outer

(block) @block.inner
(declaration_list) @block.inner
(field_declaration_list) @block.inner
(match_block) @block.inner

(function_item body: (block) @function.inner)
(closure_expression body: (block) @function.inner)

(call_expression arguments: (arguments) @call.inner)
(macro_invocation (token_tree) @call.inner)

(let_declaration value: (_) @assignment.rhs)
(assignment_expression right: (_) @assignment.rhs)
(compound_assignment_expr right: (_) @assignment.rhs)
(field_initializer value: (_) @assignment.rhs)

(return_expression (_) @expression)
(if_expression condition: (_) @expression)
(while_expression condition: (_) @expression)
(match_expression value: (_) @expression)

(string_literal) @string.inner
