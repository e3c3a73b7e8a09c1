; inherits: javascript
; TypeScript additions on top of the JavaScript spans.

(interface_body) @block.inner
(enum_body) @block.inner
(public_field_definition value: (_) @assignment.rhs)
