// A form with data-confirm="Question?" asks before it is sent. In a file, not an onsubmit attribute: the
// Content-Security-Policy runs no inline script (issue 14, item 12).
"use strict";
document.addEventListener("submit", (event) => {
  const question = event.target.closest("form[data-confirm]")?.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
