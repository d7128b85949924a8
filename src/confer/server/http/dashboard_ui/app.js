// The dashboard: a page per view, chosen by the location's hash (#/keys?path=/app).
import {ApiError, login, onAuthNeeded, session} from './api.js';
import * as cluster from './cluster.js';
import * as coord from './coord.js';
import {fill, h} from './dom.js';
import * as keys from './keys.js';
import * as watch from './watch.js';

const PAGES = {
  cluster: cluster.show,
  keys: keys.show,
  watch: watch.show,
  leases: coord.leases,
  locks: coord.locks,
  elections: coord.elections,
  services: coord.services,
};

const main = document.getElementById('main');
let current = null; // {name, view: {stop(), update?(params)}}

function route() {
  const [name, query] = location.hash.replace(/^#\/?/, '').split('?');
  const show = PAGES[name];
  if (!show) {
    location.replace('#/cluster');
    return;
  }
  const params = new URLSearchParams(query ?? '');
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.page === name);
  }
  if (current?.name === name && current.view.update) {
    current.view.update(params);
    return;
  }
  current?.view.stop();
  main.replaceChildren();
  current = {name, view: show(main, params)};
}

function showSession() {
  const box = document.getElementById('session');
  if (session.token) {
    fill(box, h('span', {class: 'muted'}, 'signed in as '), h('strong', {}, session.user), ' ',
      h('button', {type: 'button', onclick: signOut}, 'Sign out'));
  } else {
    const why = 'Sign in to change keys (authentication must be enabled).';
    fill(box, h('span', {class: 'muted', title: why}, 'read-only'), ' ',
      h('button', {type: 'button', onclick: () => askLogin('')}, 'Sign in'));
  }
}

function reload() {
  current?.view.stop();
  current = null;
  route();
}

function signOut() {
  session.clear();
  showSession();
  reload();
}

const dialog = document.getElementById('login');
const form = document.getElementById('login-form');
const loginError = document.getElementById('login-error');

function askLogin(why) {
  if (dialog.open) return;
  document.getElementById('login-why').textContent = why;
  loginError.hidden = true;
  form.reset();
  dialog.showModal();
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  try {
    await login(String(data.get('name')), String(data.get('password')));
  } catch (e) {
    loginError.textContent = e instanceof ApiError ? e.message : String(e);
    loginError.hidden = false;
    return;
  }
  dialog.close();
  showSession();
  reload();
});
document.getElementById('login-cancel').addEventListener('click', () => dialog.close());

onAuthNeeded((error) => {
  if (session.token) session.clear(); // expired or revoked
  showSession();
  askLogin(`Authentication is enabled: ${error.message}`);
});

window.addEventListener('hashchange', route);
showSession();
route();
