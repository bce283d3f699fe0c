// On narrow screens the top bar's navigation and user menu fold behind the "Menu" button (issue 15). Without this
// script the button stays hidden and the menu shown, so every page is still reachable. In a file, not inline:
// the Content-Security-Policy runs no inline script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const button = document.querySelector(".menu-toggle[aria-controls]");
  const menu = button && document.getElementById(button.getAttribute("aria-controls"));
  if (!menu) return;
  const topbar = button.closest(".topbar");
  const setOpen = (open) => button.setAttribute("aria-expanded", open ? "true" : "false");
  setOpen(false);
  topbar.classList.add("menu-ready");
  button.addEventListener("click", () => setOpen(button.getAttribute("aria-expanded") !== "true"));
  // Escape closes the open menu and gives the focus back to its button (keyboard users are not left inside it).
  topbar.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && button.getAttribute("aria-expanded") === "true" && button.offsetParent !== null) {
      setOpen(false);
      button.focus();
    }
  });
});
